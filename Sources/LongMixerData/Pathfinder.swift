import Foundation
import LongMixerCore

// Pathfinder (Linsley et al. 2018; Kim, Linsley et al. 2020), as the Long Range Arena generated it:
// two curves of short dashes ("paddles") grow from seeds a few pixels apart, distractor curves fill the
// image, and two circular markers sit at the ends of one curve (label 1, connected) or at the ends of
// the two different curves (label 0). This is our own implementation of the algorithm of the reference
// generator (`drewlinsley/pathfinder`, `snakes.py` / `snakes2.py`) with LRA's parameters (the docstrings
// of `lra_benchmarks/data/pathfinder.py`):
//
// - A curve starts with a seed paddle at a free position (tail), oriented at a random integer degree.
//   The two target seeds: the first tail inside a central region (a border of 2·seed distance is
//   blocked), the second at `seedDistance` from it at a random integer angle.
// - Each further paddle: the pivot moves `length + 2·margin` along the last orientation; candidate
//   heads are the pixels of the circle of radius `length + margin` around it (one sample per pixel of
//   arc, truncated to pixels); each is weighted by (1 − occupancy dilated by a disc of radius margin)
//   · max(cos(min(|Δθ|·continuity, π/2)), 0)², Δθ the turn from the last orientation; one is sampled
//   and the paddle drawn from it back towards the pivot. It is refused if it overlaps the occupancy
//   mask (max(mask + paddle mask) ≥ 1.8) and re-sampled up to `paddleRetries` more times; a target
//   curve that fails restarts the pair, a distractor that fails is re-seeded (then left out).
// - Paddles are drawn at `antialiasScale`× resolution (width round(thickness·scale)), downsampled with
//   a Lanczos-3 filter (8-bit, as PIL resizes) and scaled by the contrast; the occupancy mask of a
//   paddle is the line dilated by a disc of radius margin·scale, downsampled the same way.
// - Markers: discs of radius `markerRadius` at `antialiasScale`× resolution, downsampled the same way.
// - The image is the pixelwise maximum of everything, then byte-scaled (min → 0, max → 255) as the
//   reference's PNG writer did.
//
// Deliberate differences from the reference: the target pair's newest paddles are checked against each
// other too, and both targets' last paddles enter the occupancy mask before the distractors are drawn
// (the reference checks neither, so a distractor or the other target could cross a target's end and
// make a negative sample look connected); a seed's footprint is anchored at its tail (the reference's
// dilation is off by one pixel); labels are balanced exactly (each pair of consecutive samples holds
// one positive and one negative, in a seeded order) instead of drawn independently; each sample has
// its own generator seeded from (seed, split, index), so the data do not depend on the thread count.

/// LRA's three Pathfinder difficulties: the number of paddles in each target curve.
public enum PathfinderDifficulty: String, CaseIterable, Sendable {
    case easy, intermediate, hard

    public var contourLength: Int {
        switch self {
        case .easy: return 6
        case .intermediate: return 9
        case .hard: return 14
        }
    }

    /// The folder of this difficulty in the LRA release.
    public var lraFolder: String { self == .easy ? "curv_baseline" : "curv_contour_length_\(contourLength)" }
}

/// The generator's parameters (names follow the reference's arguments).
public struct PathfinderParameters: Sendable, Equatable {
    /// Image side (square images).
    public var size: Int
    /// Blocked border, in pixels.
    public var padding: Int
    /// Margins around paddles; one is drawn per image (`paddle_margin_list`).
    public var margins: [Int]
    public var paddleLength: Int
    public var paddleThickness: Double
    public var antialiasScale: Int
    public var markerRadius: Double
    public var seedDistance: Int
    public var continuity: Double
    /// Paddles per target curve.
    public var contourLength: Int
    /// Paddles per distractor curve.
    public var distractorLength: Int
    public var distractorCount: Int
    public var snakeContrast: Double
    /// Target paddles are drawn at paddleContrast · snakeContrast, distractors at snakeContrast.
    public var paddleContrast: Double
    public var distractorRetries: Int = 4
    public var paddleRetries: Int = 2
    /// A distractor is not seeded once less than this fraction of the image is free.
    public var stopWithAvailability: Double = 0.01

    /// LRA "Pathfinder" (32×32; `hard` is the one LRA reports).
    public static func pathfinder32(_ difficulty: PathfinderDifficulty) -> PathfinderParameters {
        let distractorLength = difficulty.contourLength / 3
        return PathfinderParameters(size: 32, padding: 1, margins: [1], paddleLength: 2, paddleThickness: 0.5, antialiasScale: 2,
                                    markerRadius: 1.5, seedDistance: 7, continuity: 1.0, contourLength: difficulty.contourLength,
                                    distractorLength: distractorLength, distractorCount: 20 / distractorLength,
                                    snakeContrast: 2, paddleContrast: 0.75)
    }

    /// LRA "Path-X" (128×128). The paddle length keeps the reference wrapper's default, 5.
    public static func pathX(_ difficulty: PathfinderDifficulty) -> PathfinderParameters {
        let distractorLength = difficulty.contourLength / 3
        return PathfinderParameters(size: 128, padding: 1, margins: [2, 3], paddleLength: 5, paddleThickness: 1.5, antialiasScale: 2,
                                    markerRadius: 3, seedDistance: 20, continuity: 1.8, contourLength: difficulty.contourLength,
                                    distractorLength: distractorLength, distractorCount: 35 / distractorLength,
                                    snakeContrast: 0.9, paddleContrast: 1)
    }
}

/// A pixel position (row, column).
public struct PixelPoint: Equatable, Hashable, Sendable {
    public var y: Int
    public var x: Int
    public init(_ y: Int, _ x: Int) { self.y = y; self.x = x }
}

/// One drawn paddle, in the direction its curve grows.
public struct PathfinderPaddle: Equatable, Sendable {
    /// The end nearer the previous paddle (a seed's tail).
    public var near: PixelPoint
    /// The far end (the curve's tip while this is its last paddle).
    public var far: PixelPoint
    /// Direction of growth, radians.
    public var orientation: Double
}

/// A generated image with what it was made of.
public struct PathfinderSample: Sendable {
    public var pixels: [UInt8]
    /// 1: the markers sit on the ends of one curve.
    public var label: Int
    /// The two target curves, paddle by paddle.
    public var targets: [[PathfinderPaddle]]
    public var distractors: [[PathfinderPaddle]]
    /// Marker centres: the start of one target curve and the end of the same (label 1) or the other.
    public var originMarker: PixelPoint
    public var terminalMarker: PixelPoint
    /// Which target curve carries each marker.
    public var originCurve: Int
    public var terminalCurve: Int
    public var margin: Int
}

// MARK: - Rendering

/// An 8-bit Lanczos-3 resampling of one axis as PIL computes it (fixed-point coefficients, support
/// scaled by the reduction factor, taps clipped at the borders and renormalised).
struct LanczosAxis: Sendable {
    static let precisionBits = 22
    /// First input index and fixed-point weights of each output index.
    let starts: [Int]
    let weights: [[Int]]

    init(input: Int, output: Int) {
        let scale = Double(input) / Double(output)
        let filterScale = max(scale, 1)
        let support = 3 * filterScale
        func lanczos(_ x: Double) -> Double {
            guard x > -3 && x < 3 else { return 0 }
            func sinc(_ v: Double) -> Double { v == 0 ? 1 : sin(Double.pi * v) / (Double.pi * v) }
            return sinc(x) * sinc(x / 3)
        }
        var starts: [Int] = [], weights: [[Int]] = []
        for i in 0..<output {
            let center = (Double(i) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let hi = min(Int(center + support + 0.5), input)
            var w = (lo..<hi).map { lanczos((Double($0) - center + 0.5) / filterScale) }
            let total = w.reduce(0, +)
            if total != 0 { w = w.map { $0 / total } }
            let one = Double(1 << Self.precisionBits)
            starts.append(lo)
            weights.append(w.map { $0 < 0 ? Int(-0.5 + $0 * one) : Int(0.5 + $0 * one) })
        }
        self.starts = starts
        self.weights = weights
    }

    @inline(__always)
    static func clip8(_ accumulated: Int) -> Int {
        let v = (accumulated + (1 << (precisionBits - 1))) >> precisionBits
        return v < 0 ? 0 : (v > 255 ? 255 : v)
    }
}

/// Resamples an 8-bit image `input` (inW × inH) to the output rows `rows` and columns `columns` of
/// an (axisX.output × axisY.output) image: horizontal pass, then vertical, each rounded to 8 bits.
func lanczosResample(_ input: [UInt8], width inW: Int, axisX: LanczosAxis, axisY: LanczosAxis, rows: Range<Int>, columns: Range<Int>)
    -> [UInt8] {
    guard !rows.isEmpty, !columns.isEmpty else { return [] }
    // Input rows the vertical pass needs.
    var firstRow = Int.max, lastRow = Int.min
    for r in rows {
        firstRow = min(firstRow, axisY.starts[r])
        lastRow = max(lastRow, axisY.starts[r] + axisY.weights[r].count)
    }
    let cw = columns.count
    var horizontal = [Int](repeating: 0, count: (lastRow - firstRow) * cw)
    for y in firstRow..<lastRow {
        let rowBase = y * inW
        for (j, c) in columns.enumerated() {
            let s = axisX.starts[c]
            var acc = 0
            for (k, w) in axisX.weights[c].enumerated() { acc += Int(input[rowBase + s + k]) * w }
            horizontal[(y - firstRow) * cw + j] = LanczosAxis.clip8(acc)
        }
    }
    var out = [UInt8](repeating: 0, count: rows.count * cw)
    for (i, r) in rows.enumerated() {
        let s = axisY.starts[r] - firstRow
        for j in 0..<cw {
            var acc = 0
            for (k, w) in axisY.weights[r].enumerated() { acc += horizontal[(s + k) * cw + j] * w }
            out[i * cw + j] = UInt8(LanczosAxis.clip8(acc))
        }
    }
    return out
}

/// A paddle rendered once: line intensity (before contrast) and occupancy mask, both in [0, 1], on a
/// square patch centred on the paddle's start.
struct PaddleStamp: Sendable {
    /// A non-zero stamp pixel: offset from the start and value.
    struct Pixel: Sendable {
        let dy: Int
        let dx: Int
        let value: Float
    }

    let side: Int
    let half: Int
    /// The mask on the whole patch (row-major), for looking a pixel up.
    let mask: [Float]
    let linePixels: [Pixel]
    let maskPixels: [Pixel]
    /// Mask pixels ≥ 0.8: the only ones that can reach the overlap threshold 1.8 (the mask is ≤ 1).
    let strongMaskPixels: [Pixel]
    /// Offsets from the start where the mask saturates (what a seed must find free).
    let footprint: [(dy: Int, dx: Int)]

    init(side: Int, line: [UInt8], mask: [UInt8]) {
        self.side = side
        half = side / 2
        self.mask = mask.map { Float($0) / 255 }
        func pixels(_ values: [UInt8], minimum: UInt8) -> [Pixel] {
            var out: [Pixel] = []
            for y in 0..<side {
                for x in 0..<side where values[y * side + x] >= minimum && values[y * side + x] > 0 {
                    out.append(Pixel(dy: y - side / 2, dx: x - side / 2, value: Float(values[y * side + x]) / 255))
                }
            }
            return out
        }
        linePixels = pixels(line, minimum: 1)
        maskPixels = pixels(mask, minimum: 1)
        strongMaskPixels = maskPixels.filter { $0.value >= 0.8 }
        footprint = maskPixels.filter { $0.value == 1 }.map { ($0.dy, $0.dx) }
    }

    /// The mask value at offset (dy, dx) from the start (0 outside the patch).
    @inline(__always)
    func maskValue(dy: Int, dx: Int) -> Float {
        let y = dy + half, x = dx + half
        return y >= 0 && y < side && x >= 0 && x < side ? mask[y * side + x] : 0
    }
}

/// A candidate next head of a growing curve: its offset from the pivot, the direction from the
/// pivot, and the paddle drawn from it back towards the pivot.
struct StepCandidate: Sendable {
    let dy: Int
    let dx: Int
    let orientation: Double
    let stamp: PaddleStamp
}

/// Everything that depends only on the parameters and the margin, computed once and shared by all
/// threads: paddles at every seed orientation and at every candidate step of a growing curve.
struct PathfinderRenderer: Sendable {
    let parameters: PathfinderParameters
    let margin: Int
    /// Seed paddles by integer degree (index degree + 180).
    let seeds: [PaddleStamp]
    /// Free tail positions of the first target seed by integer degree: the image's blocked border of
    /// twice the seed distance under the seed's footprint (the same for every image).
    let firstSeedPositions: [BitGrid]
    /// Candidate heads around the pivot in the reference's sampling order (sorted by row offset, then
    /// column offset): one sample per pixel of arc of the circle of radius length + margin, as
    /// numpy's arange(0, 360, step) in degrees, each offset rounded down to whole pixels (the pivot is
    /// a whole pixel, so this is the reference's truncation of the sampled position).
    let candidates: [StepCandidate]
    /// Disc of radius margin (the mask dilation before weighting candidates).
    let disc: [(dy: Int, dx: Int)]
    /// max(cos(min(|Δθ|·continuity, π/2)), 0)² for every orientation a curve can have (index: a seed's
    /// degree + 180, or 360 + a candidate's index) and every candidate: row-major, candidates.count wide.
    let turnWeights: [Double]

    init(_ p: PathfinderParameters, margin: Int) {
        parameters = p
        self.margin = margin
        let length = p.paddleLength, aa = p.antialiasScale
        let halfExtent = length + Int(p.paddleThickness.rounded(.up)) + margin
        let blownSide = halfExtent * 2 * aa + 1, side = halfExtent * 2 + 1
        let axis = LanczosAxis(input: blownSide, output: side)
        let blownWidth = Int((p.paddleThickness * Double(aa)).rounded(.toNearestOrEven))
        let dilation = Self.discOffsets(radius: margin * aa)

        func stamp(_ orientation: Double) -> PaddleStamp {
            let c = halfExtent * aa
            let head = translate(PixelPoint(c, c), orientation, Double(length * aa))
            var line = [UInt8](repeating: 0, count: blownSide * blownSide)
            Self.rasterizeLine(&line, side: blownSide, from: PixelPoint(c, c), to: head, width: blownWidth)
            var dilated = [UInt8](repeating: 0, count: blownSide * blownSide)
            for y in 0..<blownSide {
                for x in 0..<blownSide where line[y * blownSide + x] != 0 {
                    for o in dilation {
                        let yy = y + o.dy, xx = x + o.dx
                        if yy >= 0 && yy < blownSide && xx >= 0 && xx < blownSide { dilated[yy * blownSide + xx] = 255 }
                    }
                }
            }
            let l = lanczosResample(line, width: blownSide, axisX: axis, axisY: axis, rows: 0..<side, columns: 0..<side)
            let m = lanczosResample(dilated, width: blownSide, axisX: axis, axisY: axis, rows: 0..<side, columns: 0..<side)
            return PaddleStamp(side: side, line: l, mask: m)
        }

        seeds = (-180..<180).map { stamp(Double($0) * Double.pi / 180) }
        var blocked = BitGrid(side: p.size)
        let border = max(2 * p.seedDistance, p.padding)
        for y in 0..<p.size {
            for x in 0..<p.size where y < border || x < border || y >= p.size - border || x >= p.size - border { blocked.set(y, x) }
        }
        firstSeedPositions = seeds.map { blocked.free(under: $0.footprint) }
        let radius = Double(length + margin)
        let degreesPerPixel = 360 / (2 * radius * Double.pi)
        let sampleCount = Int((360 / degreesPerPixel).rounded(.up))
        var offsets: [PixelPoint] = []
        for k in 0..<sampleCount {
            let a = Double(k) * degreesPerPixel * Double.pi / 180
            offsets.append(PixelPoint(Int((radius * sin(a)).rounded(.down)), Int((radius * cos(a)).rounded(.down))))
        }
        offsets = Array(Set(offsets)).sorted { $0.y != $1.y ? $0.y < $1.y : $0.x < $1.x }
        candidates = offsets.map { o in
            let orientation = atan2(Double(o.y), Double(o.x))
            return StepCandidate(dy: o.y, dx: o.x, orientation: orientation, stamp: stamp(flipByPi(orientation)))
        }
        disc = Self.discOffsets(radius: margin)
        let orientations = (-180..<180).map { Double($0) * Double.pi / 180 } + candidates.map(\.orientation)
        var weights: [Double] = []
        for o in orientations {
            for c in candidates {
                var delta = abs(c.orientation - o)
                delta = min(delta, 2 * Double.pi - delta)
                delta = min(delta * p.continuity, Double.pi / 2)
                let turn = max(cos(delta), 0)
                weights.append(turn * turn)
            }
        }
        turnWeights = weights
    }

    /// Offsets of the disc x² + y² ≤ r² (the reference's dilation structure).
    static func discOffsets(radius r: Int) -> [(dy: Int, dx: Int)] {
        var o: [(dy: Int, dx: Int)] = []
        if r <= 0 { return [(0, 0)] }
        for dy in -r...r { for dx in -r...r where dx * dx + dy * dy <= r * r { o.append((dy, dx)) } }
        return o
    }

    /// A line of `width` pixels from `a` to `b`: one pixel per step along the major axis for width 1
    /// (as PIL draws thin lines), else the pixels within width/2 of the segment between its ends.
    static func rasterizeLine(_ image: inout [UInt8], side: Int, from a: PixelPoint, to b: PixelPoint, width: Int) {
        func set(_ y: Int, _ x: Int) { if y >= 0 && y < side && x >= 0 && x < side { image[y * side + x] = 255 } }
        let dy = Double(b.y - a.y), dx = Double(b.x - a.x)
        if width <= 1 {
            let n = max(abs(b.y - a.y), abs(b.x - a.x))
            if n == 0 { set(a.y, a.x); return }
            for i in 0...n {
                let t = Double(i) / Double(n)
                set(a.y + Int((dy * t).rounded()), a.x + Int((dx * t).rounded()))
            }
            return
        }
        let length = (dx * dx + dy * dy).squareRoot()
        let half = Double(width) / 2
        for y in 0..<side {
            for x in 0..<side {
                let py = Double(y - a.y), px = Double(x - a.x)
                let along = length > 0 ? (py * dy + px * dx) / length : 0
                let across = length > 0 ? abs(py * dx - px * dy) / length : (py * py + px * px).squareRoot()
                if along >= -0.5 && along <= length + 0.5 && across <= half { image[y * side + x] = 255 }
            }
        }
    }
}

/// The reference's coordinate step: ceil of the translated position.
func translate(_ p: PixelPoint, _ orientation: Double, _ distance: Double) -> PixelPoint {
    PixelPoint(Int((Double(p.y) + distance * sin(orientation)).rounded(.up)), Int((Double(p.x) + distance * cos(orientation)).rounded(.up)))
}

func flipByPi(_ orientation: Double) -> Double { orientation < 0 ? orientation + Double.pi : orientation - Double.pi }

// MARK: - Generation

/// Rows of bits, for finding free seed positions fast (the reference dilates the whole mask with the
/// paddle's footprint; here a position is free when no footprint pixel lands on an occupied one).
struct BitGrid {
    let side: Int
    let words: Int
    var bits: [UInt64]

    init(side: Int) {
        self.side = side
        words = (side + 63) / 64
        bits = [UInt64](repeating: 0, count: words * side)
    }

    @inline(__always) func get(_ y: Int, _ x: Int) -> Bool { bits[y * words + x >> 6] >> UInt64(x & 63) & 1 == 1 }
    @inline(__always) mutating func set(_ y: Int, _ x: Int) { bits[y * words + x >> 6] |= 1 << UInt64(x & 63) }

    /// Positions p such that p + o is unoccupied (or outside) for every offset o.
    func free(under offsets: [(dy: Int, dx: Int)]) -> BitGrid {
        var blocked = BitGrid(side: side)
        for o in offsets {
            for y in max(0, -o.dy)..<min(side, side - o.dy) {
                let source = (y + o.dy) * words, target = y * words
                // target bit x = source bit x + dx
                for w in 0..<words {
                    let bit = w * 64 + o.dx
                    let lowWord = bit >> 6 // arithmetic shift floors negative positions
                    let shift = UInt64(bit & 63)
                    var v: UInt64 = 0
                    if lowWord >= 0 && lowWord < words { v = bits[source + lowWord] >> shift }
                    if shift != 0 && lowWord + 1 >= 0 && lowWord + 1 < words { v |= bits[source + lowWord + 1] << (64 - shift) }
                    blocked.bits[target + w] |= v
                }
            }
        }
        var free = BitGrid(side: side)
        let tail = side & 63 == 0 ? UInt64.max : (UInt64(1) << UInt64(side & 63)) - 1
        for y in 0..<side {
            for w in 0..<words { free.bits[y * words + w] = ~blocked.bits[y * words + w] & (w == words - 1 ? tail : .max) }
        }
        return free
    }

    var count: Int { bits.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The n-th set position in row-major order.
    func position(_ n: Int) -> PixelPoint {
        var remaining = n
        for i in 0..<bits.count {
            let c = bits[i].nonzeroBitCount
            if remaining < c {
                var word = bits[i]
                for _ in 0..<remaining { word &= word - 1 }
                return PixelPoint(i / words, (i % words) * 64 + word.trailingZeroBitCount)
            }
            remaining -= c
        }
        fatalError("BitGrid.position(\(n)) beyond \(count) set bits")
    }
}

/// The Pathfinder generator for one parameter set.
public struct PathfinderGenerator: Sendable {
    public let parameters: PathfinderParameters
    let renderers: [PathfinderRenderer]
    let markerAxis: LanczosAxis
    /// Attempts at placing the two target curves before giving up (the reference retries forever).
    static let maxPairAttempts = 1_000_000
    /// Label 0 and 1.
    public static let classNames = ["disconnected", "connected"]

    public init(_ parameters: PathfinderParameters) {
        self.parameters = parameters
        renderers = parameters.margins.map { PathfinderRenderer(parameters, margin: $0) }
        markerAxis = LanczosAxis(input: parameters.size * parameters.antialiasScale, output: parameters.size)
    }

    /// The occupancy mask of one image, with a journal of the changes since a mark so that a failed
    /// curve is undone cheaply (most attempts at the target pair fail). Intensities are drawn only
    /// for curves that are kept.
    struct Canvas {
        let side: Int
        var mask: [Float]
        /// Pixels with mask > 0.3 (what the reference counts as occupied).
        var occupied = 0
        var journal: [(index: Int32, mask: Float)] = []

        init(side: Int, padding: Int) {
            self.side = side
            mask = [Float](repeating: 0, count: side * side)
            for y in 0..<side {
                for x in 0..<side where y < padding || x < padding || y >= side - padding || x >= side - padding {
                    mask[y * side + x] = 1
                    occupied += 1
                }
            }
        }

        typealias Mark = (journal: Int, occupied: Int)
        var mark: Mark { (journal.count, occupied) }

        /// Undoes every change since `mark`.
        mutating func rollback(to mark: Mark) {
            while journal.count > mark.journal {
                let e = journal.removeLast()
                mask[Int(e.index)] = e.mask
            }
            occupied = mark.occupied
        }

        /// Forgets the journal (the changes are kept).
        mutating func commit() { journal.removeAll(keepingCapacity: true) }

        /// Pixelwise maximum of a paddle's mask into the mask.
        mutating func addMask(_ s: PaddleStamp, at p: PixelPoint) {
            for q in s.maskPixels {
                let y = p.y + q.dy, x = p.x + q.dx
                guard y >= 0 && y < side && x >= 0 && x < side else { continue }
                let i = y * side + x
                if q.value > mask[i] {
                    journal.append((Int32(i), mask[i]))
                    if mask[i] <= 0.3 && q.value > 0.3 { occupied += 1 }
                    mask[i] = q.value
                }
            }
        }

        /// Whether the paddle would overlap the mask, or the other curve's newest paddle: the
        /// reference's max(mask + paddle mask) ≥ 1.8.
        func overlaps(_ s: PaddleStamp, at p: PixelPoint, pending: (stamp: PaddleStamp, at: PixelPoint)?) -> Bool {
            for q in s.strongMaskPixels {
                let y = p.y + q.dy, x = p.x + q.dx
                guard y >= 0 && y < side && x >= 0 && x < side else { continue }
                var m = mask[y * side + x]
                if let (o, at) = pending { m = max(m, o.maskValue(dy: y - at.y, dx: x - at.x)) }
                if m + q.value >= 1.8 { return true }
            }
            return false
        }

        /// Whether a seed's footprint at `tail` finds only free pixels (mask ≤ 0.3, outside a blocked
        /// border of `border` pixels; positions outside the image do not count).
        func isFree(_ tail: PixelPoint, footprint: [(dy: Int, dx: Int)], border: Int) -> Bool {
            for o in footprint {
                let y = tail.y + o.dy, x = tail.x + o.dx
                guard y >= 0 && y < side && x >= 0 && x < side else { continue }
                if y < border || x < border || y >= side - border || x >= side - border || mask[y * side + x] > 0.3 { return false }
            }
            return true
        }

        /// Occupied pixels (mask > 0.3) with a blocked border of `border` pixels.
        func occupancy(border: Int) -> BitGrid {
            var g = BitGrid(side: side)
            for y in 0..<side {
                for x in 0..<side where mask[y * side + x] > 0.3 || y < border || x < border || y >= side - border || x >= side - border {
                    g.set(y, x)
                }
            }
            return g
        }

        /// The mask dilated by `disc` at one pixel.
        func dilatedMask(_ y: Int, _ x: Int, disc: [(dy: Int, dx: Int)]) -> Float {
            var m: Float = 0
            for o in disc {
                let yy = y + o.dy, xx = x + o.dx
                if yy >= 0 && yy < side && xx >= 0 && xx < side { m = max(m, mask[yy * side + xx]) }
            }
            return m
        }
    }

    /// A growing curve.
    struct Curve {
        var pivot: PixelPoint
        var orientation: Double
        /// Row of the orientation in the renderer's turn weights.
        var orientationIndex: Int
        /// The newest paddle (not in the mask yet: the next paddle may come close to it).
        var last: (stamp: PaddleStamp, at: PixelPoint)
        var paddles: [PathfinderPaddle]
        /// Every paddle's stamp and position, drawn once the curve is kept.
        var stamps: [(stamp: PaddleStamp, at: PixelPoint)]
    }

    func inBounds(_ p: PixelPoint) -> Bool { p.y >= 0 && p.y < parameters.size && p.x >= 0 && p.x < parameters.size }

    /// A seed paddle: orientation, tail, head and pivot (nil when the head or pivot leaves the image).
    func seedCurve(_ r: PathfinderRenderer, degrees: Int, tail: PixelPoint) -> Curve? {
        let orientation = Double(degrees) * Double.pi / 180
        let head = translate(tail, orientation, Double(parameters.paddleLength))
        let pivot = translate(head, flipByPi(orientation), Double(parameters.paddleLength + r.margin))
        guard inBounds(head) && inBounds(pivot) else { return nil }
        let stamp = r.seeds[degrees + 180]
        return Curve(pivot: pivot, orientation: orientation, orientationIndex: degrees + 180, last: (stamp, tail),
                     paddles: [PathfinderPaddle(near: tail, far: head, orientation: orientation)], stamps: [(stamp, tail)])
    }

    /// Seeds a distractor at a position drawn uniformly from those where its footprint is free (a
    /// 1-pixel border blocked). Random positions are tried first and the free set is scanned only when
    /// they keep missing; both draw uniformly from the same set.
    func seedDistractor(_ r: PathfinderRenderer, canvas: Canvas, generator g: inout RandomGenerator) -> Curve? {
        let size = parameters.size
        for _ in 0...parameters.paddleRetries {
            let degrees = g.nextInt(below: 360) - 180
            let footprint = r.seeds[degrees + 180].footprint
            var tail: PixelPoint?
            for _ in 0..<32 {
                let t = PixelPoint(g.nextInt(below: size), g.nextInt(below: size))
                if canvas.isFree(t, footprint: footprint, border: 1) { tail = t; break }
            }
            if tail == nil {
                let free = canvas.occupancy(border: 1).free(under: footprint)
                let available = free.count
                if available == 0 { return nil }
                tail = free.position(g.nextInt(below: available))
            }
            if let curve = seedCurve(r, degrees: degrees, tail: tail!) { return curve }
        }
        return nil
    }

    /// Adds one paddle to `curve` (false: dead end, or an overlap on every retry).
    func extend(_ curve: inout Curve, _ r: PathfinderRenderer, canvas: inout Canvas,
                pending: (stamp: PaddleStamp, at: PixelPoint)?, generator g: inout RandomGenerator) -> Bool {
        let p = parameters
        let pivot = translate(curve.pivot, curve.orientation, Double(p.paddleLength + 2 * r.margin))
        let picked: Int? = withUnsafeTemporaryAllocation(of: (Int, Double).self, capacity: r.candidates.count) { weights in
            var n = 0
            var total = 0.0
            let row = curve.orientationIndex * r.candidates.count
            for (k, c) in r.candidates.enumerated() {
                let y = pivot.y + c.dy, x = pivot.x + c.dx
                guard y >= 0 && y < p.size && x >= 0 && x < p.size else { continue }
                let weight = r.turnWeights[row + k]
                if weight == 0 { continue }
                total += (1 - Double(canvas.dilatedMask(y, x, disc: r.disc))) * weight
                weights[n] = (k, total)
                n += 1
            }
            if n == 0 || total < 1e-4 { return nil }   // dead end
            for _ in 0...p.paddleRetries {
                let u = g.nextUniformDouble() * total
                var pick = n - 1
                for j in 0..<n where weights[j].1 > u { pick = j; break }
                let k = weights[pick].0, c = r.candidates[k]
                if !canvas.overlaps(c.stamp, at: PixelPoint(pivot.y + c.dy, pivot.x + c.dx), pending: pending) { return k }
            }
            return nil
        }
        guard let k = picked else { return false }
        let c = r.candidates[k]
        let head = PixelPoint(pivot.y + c.dy, pivot.x + c.dx)
        canvas.addMask(curve.last.stamp, at: curve.last.at)
        let near = translate(head, flipByPi(c.orientation), Double(p.paddleLength))
        curve.paddles.append(PathfinderPaddle(near: near, far: head, orientation: c.orientation))
        curve.stamps.append((c.stamp, head))
        curve.last = (c.stamp, head)
        curve.pivot = pivot
        curve.orientation = c.orientation
        curve.orientationIndex = 360 + k
        return true
    }

    /// The two target curves, their masks added to the canvas (nil if a seed or a paddle could not be
    /// placed; the canvas may then hold part of them).
    func targetPair(_ r: PathfinderRenderer, canvas: inout Canvas, generator g: inout RandomGenerator) -> [Curve]? {
        let p = parameters
        // First seed inside the central region (a border of twice the seed distance is blocked).
        var first: Curve?
        for _ in 0...p.paddleRetries {
            let degrees = g.nextInt(below: 360) - 180
            let positions = r.firstSeedPositions[degrees + 180]
            let available = positions.count
            if available == 0 { return nil }
            first = seedCurve(r, degrees: degrees, tail: positions.position(g.nextInt(below: available)))
            if first != nil { break }
        }
        guard let first else { return nil }
        // Second seed at the seed distance from the first tail, in any direction.
        var second: Curve?
        let tailOne = first.paddles[0].near
        for _ in 0...p.paddleRetries {
            let degrees = g.nextInt(below: 360) - 180
            let angle = Double(g.nextInt(below: 360)) * Double.pi / 180
            let tail = PixelPoint(Int((Double(tailOne.y) + Double(p.seedDistance) * sin(angle)).rounded(.toNearestOrEven)),
                                  Int((Double(tailOne.x) + Double(p.seedDistance) * cos(angle)).rounded(.toNearestOrEven)))
            second = seedCurve(r, degrees: degrees, tail: tail)
            if second != nil { break }
        }
        guard let second else { return nil }
        var curves = [first, second]
        for _ in 1..<p.contourLength {
            for c in 0..<2 {
                if !extend(&curves[c], r, canvas: &canvas, pending: curves[1 - c].last, generator: &g) { return nil }
            }
        }
        for c in curves { canvas.addMask(c.last.stamp, at: c.last.at) }
        return curves
    }

    /// One distractor curve, its mask added to the canvas (nil: not placed; the canvas is left as it was).
    func distractor(_ r: PathfinderRenderer, canvas: inout Canvas, generator g: inout RandomGenerator) -> Curve? {
        let p = parameters
        let free = p.size * p.size - canvas.occupied
        if Double(free) / Double(p.size * p.size) < p.stopWithAvailability { return nil }
        guard var curve = seedDistractor(r, canvas: canvas, generator: &g) else { return nil }
        let mark = canvas.mark
        for _ in 1..<max(p.distractorLength, 1) {
            if !extend(&curve, r, canvas: &canvas, pending: nil, generator: &g) {
                canvas.rollback(to: mark)
                return nil
            }
        }
        canvas.addMask(curve.last.stamp, at: curve.last.at)
        canvas.commit()
        return curve
    }

    /// Pixelwise maximum of a curve's paddles (times `contrast`) into `image`.
    func draw(_ curve: Curve, contrast: Float, into image: inout [Float]) {
        let side = parameters.size
        for (s, at) in curve.stamps {
            for q in s.linePixels {
                let y = at.y + q.dy, x = at.x + q.dx
                guard y >= 0 && y < side && x >= 0 && x < side else { continue }
                image[y * side + x] = max(image[y * side + x], q.value * contrast)
            }
        }
    }

    /// Marker disc at `center` drawn into `image` (pixelwise maximum).
    func drawMarker(_ center: PixelPoint, into image: inout [Float]) {
        let p = parameters, aa = p.antialiasScale, n = p.size * aa
        let r = p.markerRadius * Double(aa)
        let cy = center.y * aa, cx = center.x * aa
        let reach = Int(r.rounded(.up))
        var blown = [UInt8](repeating: 0, count: n * n)
        let ys = max(0, cy - reach), ye = min(n - 1, cy + reach), xs = max(0, cx - reach), xe = min(n - 1, cx + reach)
        guard ys <= ye && xs <= xe else { return }
        for y in ys...ye {
            for x in xs...xe {
                let dy = Double(y - cy), dx = Double(x - cx)
                if dy * dy + dx * dx <= r * r { blown[y * n + x] = 255 }
            }
        }
        let span = Int(p.markerRadius.rounded(.up)) + 4
        let rows = max(0, center.y - span)..<min(p.size, center.y + span + 1)
        let columns = max(0, center.x - span)..<min(p.size, center.x + span + 1)
        guard !rows.isEmpty && !columns.isEmpty else { return }
        let disc = lanczosResample(blown, width: n, axisX: markerAxis, axisY: markerAxis, rows: rows, columns: columns)
        for (i, y) in rows.enumerated() {
            for (j, x) in columns.enumerated() {
                image[y * p.size + x] = max(image[y * p.size + x], Float(disc[i * columns.count + j]) / 255)
            }
        }
    }

    /// The sample generated by `generator` with the given label.
    public func sample(label: Int, generator g: inout RandomGenerator) throws -> PathfinderSample {
        let p = parameters
        let r = renderers[g.nextInt(below: renderers.count)]
        var canvas = Canvas(side: p.size, padding: p.padding)
        let start = canvas.mark
        var pair: [Curve]?
        for _ in 0..<Self.maxPairAttempts {
            pair = targetPair(r, canvas: &canvas, generator: &g)
            if pair != nil { break }
            canvas.rollback(to: start)
        }
        guard let curves = pair else {
            throw UserError(.runtime, what: "pathfinder generator", why: "could not place two target curves in \(Self.maxPairAttempts) attempts")
        }
        canvas.commit()
        var image = [Float](repeating: 0, count: p.size * p.size)
        for c in curves { draw(c, contrast: Float(p.paddleContrast * p.snakeContrast), into: &image) }
        var distractors: [[PathfinderPaddle]] = []
        for _ in 0..<p.distractorCount {
            for _ in 0...p.distractorRetries {
                if let d = distractor(r, canvas: &canvas, generator: &g) {
                    draw(d, contrast: Float(p.snakeContrast), into: &image)
                    distractors.append(d.paddles)
                    break
                }
            }
        }
        let origin = g.nextInt(below: 2)
        let terminal = label == 1 ? origin : 1 - origin
        let originPoint = curves[origin].paddles[0].near, terminalPoint = curves[terminal].paddles.last!.far
        drawMarker(originPoint, into: &image)
        drawMarker(terminalPoint, into: &image)
        // Byte scaling (min → 0, max → 255), rounding as the reference's image writer did.
        let low = Double(image.min() ?? 0), high = Double(image.max() ?? 1)
        let scale = high > low ? 255 / (high - low) : 1
        let pixels = image.map { UInt8(min(max((Double($0) - low) * scale, 0), 255) + 0.5) }
        return PathfinderSample(pixels: pixels, label: label, targets: curves.map(\.paddles), distractors: distractors,
                                originMarker: originPoint, terminalMarker: terminalPoint, originCurve: origin, terminalCurve: terminal,
                                margin: r.margin)
    }

    /// Seed of sample `index` of `split`: a hash of (seed, image size, split, index).
    static func sampleSeed(seed: UInt64, size: Int, split: DataSplit, index: Int) -> UInt64 {
        func mix(_ z0: UInt64) -> UInt64 {
            var z = z0 &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        return mix(mix(mix(mix(seed) ^ UInt64(size)) ^ split.tag) ^ UInt64(index))
    }

    /// Sample `index` of `split`: each pair (2k, 2k + 1) holds one positive and one negative, in an
    /// order drawn from the pair's own hash.
    public func sample(index: Int, split: DataSplit, seed: UInt64) throws -> PathfinderSample {
        let pairSeed = Self.sampleSeed(seed: seed, size: parameters.size, split: split, index: index & ~1)
        let label = Int((pairSeed >> 63) ^ UInt64(index & 1))
        var g = RandomGenerator(seed: Self.sampleSeed(seed: seed ^ 0x5041_5448, size: parameters.size, split: split, index: index))
        return try sample(label: label, generator: &g)
    }

    /// Generates `count` samples of `split` into `writer`, in parallel over blocks of samples; the
    /// bytes do not depend on the thread count. `progress` gets the number of samples written so far.
    public func generate(count: Int, split: DataSplit, seed: UInt64, into writer: LabelledStoreWriter,
                         progress: (Int) -> Void = { _ in }) throws {
        let side = parameters.size, pixels = side * side
        // About 2 MB of images per block: progress reports come every few seconds even for Path-X.
        let block = max(64, (2 << 20) / pixels)
        var start = 0
        let lock = NSLock()
        while start < count {
            let n = min(block, count - start)
            var images = [UInt8](repeating: 0, count: n * pixels)
            var labels = [Int](repeating: 0, count: n)
            var failure: Error?
            images.withUnsafeMutableBufferPointer { imageBuffer in
                labels.withUnsafeMutableBufferPointer { labelBuffer in
                    let ip = imageBuffer.baseAddress!, lp = labelBuffer.baseAddress!
                    parallelFor(n, grain: 8) { range in
                        for i in range {
                            do {
                                let s = try sample(index: start + i, split: split, seed: seed)
                                s.pixels.withUnsafeBufferPointer { (ip + i * pixels).update(from: $0.baseAddress!, count: pixels) }
                                lp[i] = s.label
                            } catch {
                                lock.lock(); failure = failure ?? error; lock.unlock()
                            }
                        }
                    }
                }
            }
            if let failure { throw failure }
            try images.withUnsafeBufferPointer { buffer in
                for i in 0..<n { try writer.append(label: labels[i], UnsafeBufferPointer(rebasing: buffer[i * pixels..<(i + 1) * pixels])) }
            }
            start += n
            progress(start)
        }
    }
}
