import Foundation

/// Renders loss curves as an RGB image: one panel per series (stacked), log-scaled y, a light grid at each
/// power of ten, the raw values faint and a moving average bold, stage boundaries as vertical grey lines.
public struct LossPlot {
    /// Line colour (RGB) per series name; other series are drawn black.
    public static let palette: [String: (UInt8, UInt8, UInt8)] = [
        "loss": (40, 40, 40), "understanding": (31, 119, 180), "rf": (214, 39, 40), "repa": (44, 160, 44), "text": (148, 103, 189),
        "vae": (140, 86, 75), "siglip": (23, 190, 207), "llm": (188, 189, 34),
    ]

    /// Image width in pixels.
    public var width = 720
    /// Height of each series' panel in pixels.
    public var panelHeight = 140
    /// Gap around and between the panels in pixels.
    public var margin = 12

    /// Creates a plot with the default size: 720 pixels wide, 140-pixel panels, 12-pixel margins.
    public init() {}

    /// Pixels (HWC RGB) and size for the series in `history` (rows with "step" and loss keys).
    public func render(history: [[String: Double]], series: [String] = ["loss", "understanding", "rf", "repa", "text"],
                       stageBoundaries: [Int] = []) -> (width: Int, height: Int, pixels: [UInt8]) {
        let present = series.filter { key in history.contains { $0[key] != nil } }
        let height = Swift.max(1, present.count) * (panelHeight + margin) + margin
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        func put(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8), alpha: Double = 1) {
            guard x >= 0, x < width, y >= 0, y < height else { return }
            let i = (y * width + x) * 3
            pixels[i] = UInt8(Double(pixels[i]) * (1 - alpha) + Double(c.0) * alpha)
            pixels[i + 1] = UInt8(Double(pixels[i + 1]) * (1 - alpha) + Double(c.1) * alpha)
            pixels[i + 2] = UInt8(Double(pixels[i + 2]) * (1 - alpha) + Double(c.2) * alpha)
        }
        func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), alpha: Double = 1, thick: Bool = false) {
            let n = Swift.max(Swift.abs(x1 - x0), Swift.abs(y1 - y0), 1)
            for i in 0...n {
                let x = x0 + (x1 - x0) * i / n, y = y0 + (y1 - y0) * i / n
                put(x, y, c, alpha: alpha)
                if thick { put(x, y + 1, c, alpha: alpha) }
            }
        }
        let maxStep = history.compactMap { $0["step"] }.max() ?? 1
        let plotLeft = margin, plotRight = width - margin
        func xOf(_ step: Double) -> Int { plotLeft + Int((step / Swift.max(maxStep, 1)) * Double(plotRight - plotLeft)) }
        for (p, key) in present.enumerated() {
            let top = margin + p * (panelHeight + margin), bottom = top + panelHeight
            let points = history.compactMap { row -> (Double, Double)? in
                guard let s = row["step"], let v = row[key] else { return nil }
                return (s, v)
            }
            // REPA is negative (minus a cosine); plot 1 + value so it stays positive on a log axis.
            let values = points.map { key == "repa" ? 1 + $0.1 : $0.1 }.map { Swift.max($0, 1e-6) }
            let lo = Foundation.log10(values.min() ?? 1e-3), hi = Foundation.log10(values.max() ?? 1)
            let span = Swift.max(hi - lo, 1e-3)
            func yOf(_ v: Double) -> Int { bottom - Int((Foundation.log10(Swift.max(v, 1e-6)) - lo) / span * Double(panelHeight - 4)) - 2 }
            // Frame, grid and stage boundaries.
            line(plotLeft, top, plotRight, top, (200, 200, 200)); line(plotLeft, bottom, plotRight, bottom, (120, 120, 120))
            line(plotLeft, top, plotLeft, bottom, (120, 120, 120)); line(plotRight, top, plotRight, bottom, (200, 200, 200))
            var decade = Foundation.floor(lo)
            while decade <= hi { let y = yOf(Foundation.pow(10, decade)); if y > top && y < bottom { line(plotLeft, y, plotRight, y, (225, 225, 225)) }; decade += 1 }
            for b in stageBoundaries { line(xOf(Double(b)), top, xOf(Double(b)), bottom, (170, 170, 170)) }
            let color = LossPlot.palette[key] ?? (0, 0, 0)
            // Colour swatch in the panel's corner names the series by the palette.
            for dy in 0..<8 { for dx in 0..<20 { put(plotRight - 24 + dx, top + 4 + dy, color) } }
            var previous: (Int, Int)?
            for (pt, v) in zip(points, values) {
                let xy = (xOf(pt.0), yOf(v))
                if let prev = previous { line(prev.0, prev.1, xy.0, xy.1, color, alpha: 0.3) }
                previous = xy
            }
            let window = Swift.max(1, values.count / 50)
            previous = nil
            for i in values.indices {
                let lo = Swift.max(0, i - window + 1)
                let avg = values[lo...i].reduce(0, +) / Double(i - lo + 1)
                let xy = (xOf(points[i].0), yOf(avg))
                if let prev = previous { line(prev.0, prev.1, xy.0, xy.1, color, thick: true) }
                previous = xy
            }
        }
        return (width, height, pixels)
    }
}
