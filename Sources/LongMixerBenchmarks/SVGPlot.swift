import Foundation

/// Log-log line plots as standalone SVG (no dependencies, readable in a browser and on GitHub):
/// one or more panels side by side, each with decade grid lines, labelled axes and a legend.
public struct SVGPlot {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public init(name: String, points: [(x: Double, y: Double)]) {
            self.name = name
            self.points = points
        }
    }

    public struct Panel: Sendable {
        public var title: String
        public var xLabel: String
        public var yLabel: String
        public var series: [Series]
        public init(title: String, xLabel: String, yLabel: String, series: [Series]) {
            self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series
        }
    }

    public var title: String
    public var panels: [Panel]
    /// A line under the title (the machine and date, say).
    public var subtitle: String?

    public init(title: String, subtitle: String? = nil, panels: [Panel]) {
        self.title = title
        self.subtitle = subtitle
        self.panels = panels
    }

    /// Colour-blind-safe palette (Okabe–Ito), then grey.
    static let colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]

    static let panelWidth = 460.0, panelHeight = 340.0
    static let left = 70.0, right = 16.0, top = 64.0, bottom = 52.0, legendHeight = 18.0

    public func render() -> String {
        let names = panels.flatMap { $0.series.map(\.name) }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let legendRows = (names.count + 3) / 4
        let width = Double(panels.count) * (Self.panelWidth + Self.left + Self.right)
        let height = Self.top + Self.panelHeight + Self.bottom + Double(legendRows) * Self.legendHeight + 8
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(f(width))" height="\(f(height))" viewBox="0 0 \(f(width)) \(f(height))" \
            font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(width / 2))" y="20" text-anchor="middle" font-size="15" font-weight="bold">\(escape(title))</text>

            """
        if let subtitle {
            out += "<text x=\"\(f(width / 2))\" y=\"38\" text-anchor=\"middle\" fill=\"#555\">\(escape(subtitle))</text>\n"
        }
        for (p, panel) in panels.enumerated() {
            out += render(panel, x0: Double(p) * (Self.panelWidth + Self.left + Self.right) + Self.left, names: names)
        }
        let legendTop = Self.top + Self.panelHeight + Self.bottom
        for (i, name) in names.enumerated() {
            let x = Self.left + Double(i % 4) * 220, y = legendTop + Double(i / 4) * Self.legendHeight
            let colour = Self.colours[i % Self.colours.count]
            out += "<line x1=\"\(f(x))\" y1=\"\(f(y - 4))\" x2=\"\(f(x + 24))\" y2=\"\(f(y - 4))\" stroke=\"\(colour)\" stroke-width=\"2\"/>"
            out += "<circle cx=\"\(f(x + 12))\" cy=\"\(f(y - 4))\" r=\"3\" fill=\"\(colour)\"/>"
            out += "<text x=\"\(f(x + 30))\" y=\"\(f(y))\">\(escape(name))</text>\n"
        }
        return out + "</svg>\n"
    }

    func render(_ panel: Panel, x0: Double, names: [String]) -> String {
        let points = panel.series.flatMap(\.points).filter { $0.x > 0 && $0.y > 0 && $0.x.isFinite && $0.y.isFinite }
        guard !points.isEmpty else { return "" }
        let (xLow, xHigh) = Self.decades(points.map(\.x)), (yLow, yHigh) = Self.decades(points.map(\.y))
        let w = Self.panelWidth, h = Self.panelHeight, y0 = Self.top
        func px(_ x: Double) -> Double { x0 + (log10(x) - xLow) / (xHigh - xLow) * w }
        func py(_ y: Double) -> Double { y0 + h - (log10(y) - yLow) / (yHigh - yLow) * h }
        var out = "<g>\n<text x=\"\(f(x0 + w / 2))\" y=\"\(f(y0 - 8))\" text-anchor=\"middle\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
        out += "<rect x=\"\(f(x0))\" y=\"\(f(y0))\" width=\"\(f(w))\" height=\"\(f(h))\" fill=\"none\" stroke=\"#333\"/>\n"
        for d in Int(xLow)...Int(xHigh) {
            let x = px(pow(10, Double(d)))
            out += "<line x1=\"\(f(x))\" y1=\"\(f(y0))\" x2=\"\(f(x))\" y2=\"\(f(y0 + h))\" stroke=\"#ddd\"/>"
            out += "<text x=\"\(f(x))\" y=\"\(f(y0 + h + 16))\" text-anchor=\"middle\">\(Self.tick(d))</text>\n"
        }
        for d in Int(yLow)...Int(yHigh) {
            let y = py(pow(10, Double(d)))
            out += "<line x1=\"\(f(x0))\" y1=\"\(f(y))\" x2=\"\(f(x0 + w))\" y2=\"\(f(y))\" stroke=\"#ddd\"/>"
            out += "<text x=\"\(f(x0 - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(Self.tick(d))</text>\n"
        }
        out += "<text x=\"\(f(x0 + w / 2))\" y=\"\(f(y0 + h + 36))\" text-anchor=\"middle\">\(escape(panel.xLabel))</text>\n"
        out += "<text transform=\"translate(\(f(x0 - 52)),\(f(y0 + h / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(panel.yLabel))</text>\n"
        for s in panel.series {
            let valid = s.points.filter { $0.x > 0 && $0.y > 0 && $0.x.isFinite && $0.y.isFinite }.sorted { $0.x < $1.x }
            guard !valid.isEmpty else { continue }
            let colour = Self.colours[(names.firstIndex(of: s.name) ?? 0) % Self.colours.count]
            let path = valid.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            out += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"/>"
            for p in valid { out += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"3\" fill=\"\(colour)\"/>" }
            out += "\n"
        }
        return out + "</g>\n"
    }

    /// Whole decades enclosing `values` (at least one decade wide).
    static func decades(_ values: [Double]) -> (Double, Double) {
        let low = floor(log10(values.min()!)), high = ceil(log10(values.max()!))
        return (low, max(high, low + 1))
    }

    /// 10^d as a short label: 1, 10, 100, 1k, 10k, 100k, 1M, 10^-3 …
    static func tick(_ d: Int) -> String {
        switch d {
        case 0...2: return String(Int(pow(10, Double(d))))
        case 3...5: return "\(Int(pow(10, Double(d - 3))))k"
        case 6...8: return "\(Int(pow(10, Double(d - 6))))M"
        case -3 ... -1: return String(format: "%g", pow(10, Double(d)))
        default: return "1e\(d)"
        }
    }

    func f(_ x: Double) -> String { String(format: "%.1f", x) }

    func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
