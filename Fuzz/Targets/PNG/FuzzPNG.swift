import Foundation
import FuzzSupport
import JanusFlowImageIO

/// Any bytes as a PNG file (its signature put in front when missing, so that every input reaches the PNG
/// decoder), and a decoded image through the official preprocessing.
@main
struct FuzzPNG {
    static func main() {
        let preprocessor = ImagePreprocessor(size: 32)
        FuzzTarget.run { data in
            let image: RGBImage
            do {
                let signature = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
                image = try RGBImage(data: data.starts(with: signature) ? data : signature + data, name: "input")
            } catch is ImageError {
                return
            } catch {
                fatalError("RGBImage(data:) threw \(type(of: error)), not ImageError: \(error)")
            }
            precondition(image.pixels.count == image.width * image.height * 3, "pixel count does not match the size")
            // The decoder is what is under test; preprocessing a 100-megapixel picture in a debug build is only slow.
            if image.width * image.height <= 1 << 22 { _ = preprocessor.pixelValues(image) }
        }
    }
}
