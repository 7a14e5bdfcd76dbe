import Foundation
import FuzzSupport
import MLXEngine

/// Any bytes as a `.safetensors` file: header, dtypes, shapes, offsets and the tensors' bytes.
@main
struct FuzzSafetensors {
    static func main() {
        FuzzTarget.run { data in
            do {
                _ = try Safetensors.load(from: data, name: "input.safetensors")
            } catch is SafetensorsError {
            } catch {
                fatalError("Safetensors.load threw \(type(of: error)), not SafetensorsError: \(error)")
            }
        }
    }
}
