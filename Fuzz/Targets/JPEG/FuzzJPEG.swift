import Foundation
import FuzzSupport
import JanusFlowImageIO

/// Any bytes as a JPEG file (its signature put in front when missing, so that every input reaches the JPEG
/// decoder), and a decoded image through the official preprocessing.
@main
struct FuzzJPEG {
    static func main() {
        let preprocessor = ImagePreprocessor(size: 32)
        FuzzTarget.run { data in
            let image: RGBImage
            do {
                let signature = Data([0xFF, 0xD8, 0xFF])
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
