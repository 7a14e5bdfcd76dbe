import Foundation

/// Pillow's `Image.resize(size, Image.BICUBIC)` on an RGB image, byte for byte (libImaging/Resample.c):
/// a separable convolution with the bicubic kernel (a = -0.5, support 2) widened by the scale factor when shrinking
/// (antialiasing); per output pixel the taps run from `Int(center - support + 0.5)` to `Int(center + support + 0.5)`
/// clamped to the input, are normalised to sum 1 and converted to fixed point with 22 fractional bits (rounded away
/// from zero); each pass accumulates in integers from 1 << 21, shifts right by 22 and clips to 0...255, so the
/// intermediate image is 8-bit too. A pass whose size does not change is skipped. The order of the two passes
/// depends on the Pillow version (see `PassOrder`); horizontal-first only computes the input rows the vertical pass
/// reads.
public enum PillowResize {
    static let precisionBits = 32 - 8 - 2

    static func bicubic(_ x: Double) -> Double {
        let a = -0.5
        let x = Swift.abs(x)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// Per output index: the first input index and the tap count; the fixed-point weights, `stride` per output.
    struct Coefficients {
        var start: [Int]
        var count: [Int]
        var weights: [Int32]
        var stride: Int
    }

    static func coefficients(inSize: Int, outSize: Int) -> Coefficients {
        let support = 2.0
        let scale = Double(inSize) / Double(outSize)
        let filterScale = Swift.max(scale, 1)
        let width = support * filterScale
        let stride = Int(width.rounded(.up)) * 2 + 1
        var c = Coefficients(start: [], count: [], weights: [Int32](repeating: 0, count: outSize * stride), stride: stride)
        c.start.reserveCapacity(outSize)
        c.count.reserveCapacity(outSize)
        let one = Double(1 << precisionBits)
        var k = [Double](repeating: 0, count: stride)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1 / filterScale
            let xmin = Swift.max(Int(center - width + 0.5), 0)
            let xcount = Swift.min(Int(center + width + 0.5), inSize) - xmin
            var total = 0.0
            for x in 0..<xcount {
                k[x] = bicubic((Double(x + xmin) - center + 0.5) * ss)
                total += k[x]
            }
            for x in 0..<xcount {
                let w = total != 0 ? k[x] / total : k[x]
                c.weights[xx * stride + x] = w < 0 ? Int32(-0.5 + w * one) : Int32(0.5 + w * one)
            }
            c.start.append(xmin)
            c.count.append(xcount)
        }
        return c
    }

    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        if v >= Int32(1) << (precisionBits + 8) { return 255 }
        if v <= 0 { return 0 }
        return UInt8(truncatingIfNeeded: v >> precisionBits)
    }

    /// Which pass runs first when both are needed.
    public enum PassOrder: Sendable {
        /// Pillow 13 and later: the vertical pass first when the height shrinks by more than twice as many pixels
        /// as the width does (`inH - outH > 0 && inH - outH > (inW - outW) * 2`), otherwise horizontal first.
        case pillow13
        /// Pillow 12 and earlier: always horizontal first.
        case horizontalFirst
    }

    /// Whether `order` runs the vertical pass first for this resize.
    public static func verticalFirst(from source: (width: Int, height: Int), to target: (width: Int, height: Int),
                                     order: PassOrder = .pillow13) -> Bool {
        switch order {
        case .horizontalFirst: return false
        case .pillow13:
            let shrinkY = source.height - target.height, shrinkX = source.width - target.width
            return shrinkY > 0 && shrinkY > shrinkX * 2
        }
    }

    /// Resizes `image` to `width` x `height` exactly as Pillow's bicubic resize does; returns `image` itself when
    /// the size does not change. Traps on an empty image or target size.
    public static func resize(_ image: RGBImage, width: Int, height: Int, order: PassOrder = .pillow13) -> RGBImage {
        precondition(width > 0 && height > 0, "PillowResize: target size \(width)x\(height)")
        precondition(image.width > 0 && image.height > 0, "PillowResize: empty source image")
        let needHorizontal = width != image.width
        let needVertical = height != image.height
        if !needHorizontal && !needVertical { return image }
        if needHorizontal && needVertical
            && verticalFirst(from: (image.width, image.height), to: (width, height), order: order) {
            // Vertical over every column, then horizontal over the resized rows.
            return pass(pass(image, width: image.width, height: height), width: width, height: height)
        }
        return pass(image, width: width, height: height)
    }

    /// Horizontal then vertical, as Pillow runs them in that order (either may be skipped).
    static func pass(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        let needHorizontal = width != image.width
        let needVertical = height != image.height
        if !needHorizontal && !needVertical { return image }
        let vertical = needVertical ? coefficients(inSize: image.height, outSize: height) : nil
        let rounding = Int32(1) << (precisionBits - 1)
        var current = image
        if needHorizontal {
            // Only the rows the vertical pass reads.
            let firstRow = vertical.map { $0.start[0] } ?? 0
            let lastRow = vertical.map { $0.start[height - 1] + $0.count[height - 1] } ?? image.height
            let rows = lastRow - firstRow
            let c = coefficients(inSize: image.width, outSize: width)
            var out = [UInt8](repeating: 0, count: width * rows * 3)
            image.pixels.withUnsafeBufferPointer { src in
                c.weights.withUnsafeBufferPointer { weights in
                    out.withUnsafeMutableBufferPointer { dst in
                        for y in 0..<rows {
                            let row = (y + firstRow) * image.width * 3
                            for x in 0..<width {
                                let k = x * c.stride
                                var s0 = rounding, s1 = rounding, s2 = rounding
                                var p = row + c.start[x] * 3
                                for i in 0..<c.count[x] {
                                    let w = weights[k + i]
                                    s0 &+= Int32(src[p]) &* w
                                    s1 &+= Int32(src[p + 1]) &* w
                                    s2 &+= Int32(src[p + 2]) &* w
                                    p += 3
                                }
                                let o = (y * width + x) * 3
                                dst[o] = clip8(s0)
                                dst[o + 1] = clip8(s1)
                                dst[o + 2] = clip8(s2)
                            }
                        }
                    }
                }
            }
            current = RGBImage(width: width, height: rows, pixels: out)
        }
        if let c = vertical {
            let offset = needHorizontal ? c.start[0] : 0
            let rowBytes = width * 3
            var out = [UInt8](repeating: 0, count: width * height * 3)
            current.pixels.withUnsafeBufferPointer { src in
                c.weights.withUnsafeBufferPointer { weights in
                    out.withUnsafeMutableBufferPointer { dst in
                        for y in 0..<height {
                            let k = y * c.stride
                            let first = (c.start[y] - offset) * rowBytes
                            for x in 0..<rowBytes {
                                var s = rounding
                                var p = first + x
                                for i in 0..<c.count[y] {
                                    s &+= Int32(src[p]) &* weights[k + i]
                                    p += rowBytes
                                }
                                dst[y * rowBytes + x] = clip8(s)
                            }
                        }
                    }
                }
            }
            current = RGBImage(width: width, height: height, pixels: out)
        }
        return current
    }
}

/// JanusFlow's image preprocessing (`VLMImageProcessor` in DeepSeek's janus/models/image_processing_vlm.py):
/// resize so the long side is `size` (Pillow bicubic, the short side `max(Int(short / long * size), minimumSide)`),
/// paste centred on a square canvas of the resized long side filled with `Int(mean * 255)`, offset
/// `(long - short) / 2`; then `Float(Double(byte) * rescaleFactor)` and `(x - mean) / std` in float32 (the float64
/// rescale then float32 normalisation of transformers' image utilities), giving CHW float32 (3, size, size).
public struct ImagePreprocessor: Sendable {
    /// The side of the square output in pixels (384 for the released model).
    public var size: Int
    /// The per-channel mean subtracted after rescaling; it also sets the padding colour.
    public var mean: [Float]
    /// The per-channel standard deviation divided by after subtracting `mean`.
    public var std: [Float]
    /// The least the short side is resized to (`min_size`, 14 in the official processor).
    public var minimumSide: Int
    /// The byte-to-float factor applied before normalising (1/255).
    public var rescaleFactor: Double
    /// The Pillow version whose resize is reproduced (they differ only for images whose height shrinks much more
    /// than their width).
    public var resizeOrder: PillowResize.PassOrder

    /// Creates a preprocessor; the defaults are JanusFlow's. Traps unless `size` > 0 and `mean` and `std` have
    /// three values each.
    public init(size: Int = 384, mean: [Float] = [0.5, 0.5, 0.5], std: [Float] = [0.5, 0.5, 0.5], minimumSide: Int = 14,
                rescaleFactor: Double = 1.0 / 255.0, resizeOrder: PillowResize.PassOrder = .pillow13) {
        precondition(size > 0 && mean.count == 3 && std.count == 3, "ImagePreprocessor: size \(size), mean/std need 3 values")
        self.size = size
        self.mean = mean
        self.std = std
        self.minimumSide = minimumSide
        self.rescaleFactor = rescaleFactor
        self.resizeOrder = resizeOrder
    }

    /// The background colour of the padding: `int(mean * 255)` per channel (127 for 0.5).
    public var background: (UInt8, UInt8, UInt8) {
        func level(_ m: Float) -> UInt8 { UInt8(clamping: Int(Double(m) * 255)) }
        return (level(mean[0]), level(mean[1]), level(mean[2]))
    }

    /// The size the image is resized to before padding: the long side becomes `size`.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        let long = Double(Swift.max(width, height))
        return (Swift.max(Int(Double(width) / long * Double(size)), minimumSide),
                Swift.max(Int(Double(height) / long * Double(size)), minimumSide))
    }

    /// The resized and padded 8-bit image (square, side `size` unless `minimumSide` exceeds it).
    public func squareImage(_ image: RGBImage) -> RGBImage {
        let (w, h) = resizedSize(width: image.width, height: image.height)
        let resized = PillowResize.resize(image, width: w, height: h, order: resizeOrder)
        if w == h { return resized }
        let side = Swift.max(w, h)
        var canvas = RGBImage(width: side, height: side, fill: background)
        canvas.paste(resized, x: (side - w) / 2, y: (side - h) / 2)
        return canvas
    }

    /// Float32 CHW values (3 x side x side) in the model's input range.
    public func pixelValues(_ image: RGBImage) -> [Float] {
        normalize(squareImage(image))
    }

    /// The rescale and normalisation alone: HWC bytes to CHW float32.
    public func normalize(_ image: RGBImage) -> [Float] {
        let n = image.width * image.height
        var out = [Float](repeating: 0, count: 3 * n)
        // The 256 possible values per channel, computed as the reference does.
        let table = (0..<3).map { c in
            (0..<256).map { (Float(Double($0) * rescaleFactor) - mean[c]) / std[c] }
        }
        for i in 0..<n {
            for c in 0..<3 {
                out[c * n + i] = table[c][Int(image.pixels[3 * i + c])]
            }
        }
        return out
    }

    /// The inverse the demo applies to decoded images: clip to [-1, 1], (x + 1) / 2 * 255 in float32, truncate to
    /// 8 bits (NaN becomes 0). `chw` holds 3 x height x width values.
    public static func image(fromCHW chw: [Float], width: Int, height: Int) -> RGBImage {
        let n = width * height
        precondition(chw.count == 3 * n, "image(fromCHW:): \(chw.count) values for 3x\(height)x\(width)")
        var pixels = [UInt8](repeating: 0, count: 3 * n)
        for i in 0..<n {
            for c in 0..<3 {
                let x = chw[c * n + i]
                let v: Float = x.isNaN ? -1 : (x < -1 ? -1 : (x > 1 ? 1 : x))
                pixels[3 * i + c] = UInt8((v + 1) / 2 * 255)
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}
