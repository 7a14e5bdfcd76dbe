import Foundation
import FuzzSupport
import JanusFlow

/// Any bytes as the model's `config.json` and as the VAE's.
@main
struct FuzzModelConfig {
    static func main() {
        FuzzTarget.run { data in
            do {
                _ = try decodeConfig(JanusFlowConfig.self, from: data, name: "config.json")
            } catch is ModelLoadingError {
            } catch {
                fatalError("the model config threw \(type(of: error)), not ModelLoadingError: \(error)")
            }
            do {
                _ = try decodeConfig(VAEConfig.self, from: data, name: "vae/config.json")
            } catch is ModelLoadingError {
            } catch {
                fatalError("the VAE config threw \(type(of: error)), not ModelLoadingError: \(error)")
            }
        }
    }
}
