import Foundation

/// Pillow's resampling (`Image.resize` with BICUBIC) reproduced byte for byte: separable convolution with
/// antialiasing (the kernel widens by the downscale factor), fixed-point coefficients with 22 fractional bits,
/// a horizontal pass then a vertical pass, each rounded and clipped to 8 bits.
public enum PillowResize {
    static let precisionBits = 32 - 8 - 2

    static func bicubic(_ x: Double) -> Double {
        let a = -0.5
        let x = Swift.abs(x)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// For each output index: the first input index, the count, and integer weights.
    static func coefficients(inSize: Int, outSize: Int) -> (bounds: [(Int, Int)], weights: [[Int32]]) {
        let support = 2.0
        let scale = Double(inSize) / Double(outSize)
        let filterScale = Swift.max(scale, 1)
        let width = support * filterScale
        var bounds: [(Int, Int)] = []
        var weights: [[Int32]] = []
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1 / filterScale
            let xmin = Swift.max(Int(center - width + 0.5), 0)
            let xmax = Swift.min(Int(center + width + 0.5), inSize) - xmin
            var k = (0..<xmax).map { bicubic((Double($0 + xmin) - center + 0.5) * ss) }
            let total = k.reduce(0, +)
            if total != 0 { k = k.map { $0 / total } }
            let one = Double(1 << precisionBits)
            weights.append(k.map { $0 < 0 ? Int32(-0.5 + $0 * one) : Int32(0.5 + $0 * one) })
            bounds.append((xmin, xmax))
        }
        return (bounds, weights)
    }

    @inline(__always)
    static func clip8(_ v: Int64) -> UInt8 {
        if v >= Int64(1) << (precisionBits + 8) { return 255 }
        if v <= 0 { return 0 }
        return UInt8(v >> precisionBits)
    }

    public static func resize(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        var current = image
        let needHorizontal = width != image.width
        let needVertical = height != image.height
        let vertical = coefficients(inSize: image.height, outSize: height)
        // Rows the vertical pass will read; the horizontal pass only produces those.
        let firstRow = needVertical ? vertical.bounds[0].0 : 0
        let lastRow = needVertical ? vertical.bounds[height - 1].0 + vertical.bounds[height - 1].1 : image.height
        if needHorizontal {
            let (bounds, weights) = coefficients(inSize: image.width, outSize: width)
            let rows = lastRow - firstRow
            var out = [UInt8](repeating: 0, count: width * rows * 3)
            for y in 0..<rows {
                let src = (y + firstRow) * image.width * 3
                for x in 0..<width {
                    let (xmin, count) = bounds[x]
                    let k = weights[x]
                    var s0 = Int64(1) << (precisionBits - 1), s1 = s0, s2 = s0
                    for i in 0..<count {
                        let p = src + (xmin + i) * 3
                        let w = Int64(k[i])
                        s0 += Int64(image.pixels[p]) * w
                        s1 += Int64(image.pixels[p + 1]) * w
                        s2 += Int64(image.pixels[p + 2]) * w
                    }
                    let o = (y * width + x) * 3
                    out[o] = clip8(s0)
                    out[o + 1] = clip8(s1)
                    out[o + 2] = clip8(s2)
                }
            }
            current = RGBImage(width: width, height: rows, pixels: out)
        }
        if needVertical {
            var out = [UInt8](repeating: 0, count: width * height * 3)
            let offset = needHorizontal ? firstRow : 0
            for y in 0..<height {
                let (ymin, count) = vertical.bounds[y]
                let k = vertical.weights[y]
                for x in 0..<width {
                    var s0 = Int64(1) << (precisionBits - 1), s1 = s0, s2 = s0
                    for i in 0..<count {
                        let p = ((ymin - offset + i) * width + x) * 3
                        let w = Int64(k[i])
                        s0 += Int64(current.pixels[p]) * w
                        s1 += Int64(current.pixels[p + 1]) * w
                        s2 += Int64(current.pixels[p + 2]) * w
                    }
                    let o = (y * width + x) * 3
                    out[o] = clip8(s0)
                    out[o + 1] = clip8(s1)
                    out[o + 2] = clip8(s2)
                }
            }
            current = RGBImage(width: width, height: height, pixels: out)
        }
        return current
    }
}

/// JanusFlow's image preprocessing (VLMImageProcessor): resize the long side to `size` (Pillow bicubic), pad to
/// a square with the mean colour, scale to [0, 1], normalise with mean/std.
public struct ImagePreprocessor: Sendable {
    public var size: Int
    public var mean: [Float]
    public var std: [Float]
    public var minimumSide: Int

    public init(size: Int = 384, mean: [Float] = [0.5, 0.5, 0.5], std: [Float] = [0.5, 0.5, 0.5], minimumSide: Int = 14) {
        self.size = size
        self.mean = mean
        self.std = std
        self.minimumSide = minimumSide
    }

    /// The background colour of the padding: int(mean * 255) per channel.
    public var background: (UInt8, UInt8, UInt8) {
        (UInt8(Int(mean[0] * 255)), UInt8(Int(mean[1] * 255)), UInt8(Int(mean[2] * 255)))
    }

    /// The resized and padded 8-bit image (size x size).
    public func squareImage(_ image: RGBImage) -> RGBImage {
        let long = Swift.max(image.width, image.height)
        let w = Swift.max(Int(Double(image.width) / Double(long) * Double(size)), minimumSide)
        let h = Swift.max(Int(Double(image.height) / Double(long) * Double(size)), minimumSide)
        let resized = PillowResize.resize(image, width: w, height: h)
        if w == h { return resized }
        let side = Swift.max(w, h)
        var canvas = RGBImage(width: side, height: side, fill: background)
        canvas.paste(resized, x: (side - w) / 2, y: (side - h) / 2)
        return canvas
    }

    /// Float32 CHW values (3 x size x size) in the model's input range.
    public func pixelValues(_ image: RGBImage) -> [Float] {
        let square = squareImage(image)
        let n = square.width * square.height
        var out = [Float](repeating: 0, count: 3 * n)
        for i in 0..<n {
            for c in 0..<3 {
                out[c * n + i] = (Float(square.pixels[3 * i + c]) * (1 / 255.0) - mean[c]) / std[c]
            }
        }
        return out
    }

    /// The inverse the demo applies to generated images: clip to [-1, 1], (x + 1) / 2 * 255, truncate to 8 bits.
    /// `chw` holds 3 x height x width values.
    public static func image(fromCHW chw: [Float], width: Int, height: Int) -> RGBImage {
        let n = width * height
        var pixels = [UInt8](repeating: 0, count: 3 * n)
        for i in 0..<n {
            for c in 0..<3 {
                let v = Swift.min(Swift.max(chw[c * n + i], -1), 1)
                pixels[3 * i + c] = UInt8((v + 1) / 2 * 255)
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}
