import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore
import LongMixerTestSupport

/// The Pathfinder generator: labels, the curves and markers each image is made of, the rendering,
/// and reproducibility (seed, thread count).
@Suite("Pathfinder generator")
struct PathfinderTests {
    static let generator32 = PathfinderGenerator(.pathfinder32(.hard))

    static func samples(_ g: PathfinderGenerator, _ n: Int, split: DataSplit = .train, seed: UInt64 = 7) throws -> [PathfinderSample] {
        try (0..<n).map { try g.sample(index: $0, split: split, seed: seed) }
    }

    @Test("LRA's parameters per difficulty")
    func parameters() {
        let hard = PathfinderParameters.pathfinder32(.hard)
        #expect(hard.contourLength == 14 && hard.distractorLength == 4 && hard.distractorCount == 5)
        let easy = PathfinderParameters.pathfinder32(.easy)
        #expect(easy.contourLength == 6 && easy.distractorLength == 2 && easy.distractorCount == 10)
        let mid = PathfinderParameters.pathfinder32(.intermediate)
        #expect(mid.contourLength == 9 && mid.distractorLength == 3 && mid.distractorCount == 6)
        let x = PathfinderParameters.pathX(.hard)
        #expect(x.size == 128 && x.margins == [2, 3] && x.distractorCount == 8 && x.seedDistance == 20)
        #expect(PathfinderDifficulty.easy.lraFolder == "curv_baseline" && PathfinderDifficulty.hard.lraFolder == "curv_contour_length_14")
    }

    @Test("labels are balanced exactly: one positive and one negative per pair of samples")
    func balance() throws {
        let s = try Self.samples(Self.generator32, 200)
        for k in stride(from: 0, to: 200, by: 2) { #expect(s[k].label + s[k + 1].label == 1) }
        let firstPositive = stride(from: 0, to: 200, by: 2).filter { s[$0].label == 1 }.count
        #expect(firstPositive > 25 && firstPositive < 75, "the order within pairs is random: \(firstPositive) of 100")
    }

    /// Checks one sample's curves and markers (`minimumGap`/`maximumGap`: distance between a paddle's
    /// far end and the next paddle's near end).
    static func checkInvariants(_ s: PathfinderSample, _ p: PathfinderParameters, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(s.targets.count == 2, sourceLocation: sourceLocation)
        #expect(s.pixels.count == p.size * p.size, sourceLocation: sourceLocation)
        // Markers: the start of one curve and the end of the same (label 1) or the other one (label 0).
        #expect(s.originMarker == s.targets[s.originCurve][0].near, sourceLocation: sourceLocation)
        #expect(s.terminalMarker == s.targets[s.terminalCurve].last!.far, sourceLocation: sourceLocation)
        #expect((s.originCurve == s.terminalCurve) == (s.label == 1), sourceLocation: sourceLocation)
        for (c, curve) in s.targets.enumerated() {
            #expect(curve.count == p.contourLength, "target \(c) has \(curve.count) paddles", sourceLocation: sourceLocation)
        }
        for d in s.distractors { #expect(d.count == p.distractorLength, sourceLocation: sourceLocation) }
        for curve in s.targets + s.distractors {
            for paddle in curve {
                for q in [paddle.near, paddle.far] {
                    #expect(q.y >= 0 && q.y < p.size && q.x >= 0 && q.x < p.size, "paddle end \(q) outside the image", sourceLocation: sourceLocation)
                }
            }
            for (a, b) in zip(curve, curve.dropFirst()) {
                // Dashes: the gap to the next paddle is about 2·margin.
                let gap = (Double((a.far.y - b.near.y) * (a.far.y - b.near.y) + (a.far.x - b.near.x) * (a.far.x - b.near.x))).squareRoot()
                #expect(gap <= Double(2 * s.margin + 3), "gap \(gap) between paddles", sourceLocation: sourceLocation)
                // Curvature limit: a turn's weight is 0 from (π/2)/continuity on.
                var turn = abs(b.orientation - a.orientation)
                turn = min(turn, 2 * Double.pi - turn)
                #expect(turn < Double.pi / 2 / p.continuity + 1e-9, "turn \(turn) rad", sourceLocation: sourceLocation)
            }
        }
        // Markers are drawn: their centres are bright.
        for m in [s.originMarker, s.terminalMarker] {
            #expect(s.pixels[m.y * p.size + m.x] >= 100, "marker at \(m) has \(s.pixels[m.y * p.size + m.x])", sourceLocation: sourceLocation)
        }
        // Every target paddle is drawn.
        for curve in s.targets {
            for paddle in curve {
                let mid = PixelPoint((paddle.near.y + paddle.far.y) / 2, (paddle.near.x + paddle.far.x) / 2)
                #expect(s.pixels[mid.y * p.size + mid.x] > 0, "paddle \(paddle) is not drawn", sourceLocation: sourceLocation)
            }
        }
        #expect(s.pixels.max() == 255 && s.pixels.min() == 0, sourceLocation: sourceLocation)
    }

    /// Pixels reachable from `start` over pixels ≥ `threshold`, stepping up to `reach` pixels in each
    /// direction (the dashes' gaps).
    static func reachable(_ pixels: [UInt8], side: Int, from start: PixelPoint, threshold: UInt8, reach: Int) -> Set<Int> {
        var seen: Set<Int> = [start.y * side + start.x]
        var queue = [start]
        while let q = queue.popLast() {
            for dy in -reach...reach {
                for dx in -reach...reach {
                    let y = q.y + dy, x = q.x + dx
                    guard y >= 0 && y < side && x >= 0 && x < side, pixels[y * side + x] >= threshold else { continue }
                    if seen.insert(y * side + x).inserted { queue.append(PixelPoint(y, x)) }
                }
            }
        }
        return seen
    }

    @Test("curves, paddles and markers follow the algorithm; positives are connected in the image")
    func invariants() throws {
        let p = Self.generator32.parameters
        let samples = try Self.samples(Self.generator32, 120)
        for s in samples {
            Self.checkInvariants(s, p)
            if s.label == 1 {
                // Along the marked curve, every paddle is bright enough and the gaps are bridgeable.
                let seen = Self.reachable(s.pixels, side: p.size, from: s.originMarker, threshold: 40, reach: 2 * s.margin + 1)
                #expect(seen.contains(s.terminalMarker.y * p.size + s.terminalMarker.x), "positive sample's markers are not connected")
            }
        }
        // Distractors are drawn in most images (the reference allows fewer when the image fills up).
        let drawn = samples.map(\.distractors.count).reduce(0, +)
        #expect(Double(drawn) / Double(samples.count) > 3, "\(drawn) distractors in \(samples.count) images")
    }

    @Test("every difficulty and Path-X generate valid images", arguments: [PathfinderDifficulty.easy, .intermediate])
    func difficulties(_ d: PathfinderDifficulty) throws {
        let g = PathfinderGenerator(.pathfinder32(d))
        for s in try Self.samples(g, 20) { Self.checkInvariants(s, g.parameters) }
    }

    @Test("Path-X (128×128)")
    func pathX() throws {
        let g = PathfinderGenerator(.pathX(.hard))
        let samples = try Self.samples(g, 6)
        for s in samples { Self.checkInvariants(s, g.parameters) }
        #expect(Set(samples.map(\.margin)).isSubset(of: [2, 3]))
    }

    @Test("same seed, same bytes; another seed or split, other bytes; independent of the thread count")
    func reproducible() throws {
        func store(_ seed: UInt64, split: DataSplit = .train, threads: Int) throws -> Data {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("pathfinder-\(UUID().uuidString).lmstore")
            defer { try? FileManager.default.removeItem(at: url) }
            let saved = Parallel.threadCount
            Parallel.setThreadCount(threads)
            defer { Parallel.setThreadCount(saved) }
            let writer = try LabelledStoreWriter(url: url, width: 32, height: 32, classNames: ["0", "1"], description: "test")
            try Self.generator32.generate(count: 70, split: split, seed: seed, into: writer)
            try writer.finish()
            return try Data(contentsOf: url)
        }
        let a = try store(1, threads: 1)
        #expect(try store(1, threads: 2) == a)
        #expect(try store(1, threads: 3) == a)
        #expect(try store(2, threads: 2) != a)
        #expect(try store(1, split: .test, threads: 2) != a)
        let read = try LabelledStore(data: a, name: "a")
        #expect(read.count == 70)
        #expect(read.classCounts == [35, 35])
    }

    @Test("Lanczos resampling keeps flat areas, reduces by PIL's centring, and clips to 8 bits")
    func lanczos() {
        let flat = [UInt8](repeating: 200, count: 17 * 17)
        let axis = LanczosAxis(input: 17, output: 9)
        let out = lanczosResample(flat, width: 17, axisX: axis, axisY: axis, rows: 0..<9, columns: 0..<9)
        #expect(out.allSatisfy { $0 == 200 })
        // A single bright centre pixel stays centred and symmetric.
        var dot = [UInt8](repeating: 0, count: 17 * 17)
        dot[8 * 17 + 8] = 255
        let d = lanczosResample(dot, width: 17, axisX: axis, axisY: axis, rows: 0..<9, columns: 0..<9)
        #expect(d[4 * 9 + 4] == d.max())
        #expect(d[4 * 9 + 3] == d[4 * 9 + 5] && d[3 * 9 + 4] == d[5 * 9 + 4])
    }

    @Test("free seed positions match a direct scan")
    func bitGrid() {
        var rng = RandomGenerator(seed: 3)
        for side in [32, 70, 128] {
            var g = BitGrid(side: side)
            var occupied = [Bool](repeating: false, count: side * side)
            for _ in 0..<(side * side / 9) {
                let y = rng.nextInt(below: side), x = rng.nextInt(below: side)
                g.set(y, x)
                occupied[y * side + x] = true
            }
            let offsets: [(dy: Int, dx: Int)] = [(0, 0), (1, 2), (-3, 65), (2, -70), (0, -1)]
            let free = g.free(under: offsets)
            var expected = 0
            for y in 0..<side {
                for x in 0..<side {
                    let blocked = offsets.contains { o in
                        let yy = y + o.dy, xx = x + o.dx
                        return yy >= 0 && yy < side && xx >= 0 && xx < side && occupied[yy * side + xx]
                    }
                    #expect(free.get(y, x) == !blocked)
                    if !blocked { expected += 1 }
                }
            }
            #expect(free.count == expected)
            if expected > 0 {
                let p = free.position(expected - 1)
                #expect(free.get(p.y, p.x))
            }
        }
    }
}
