import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

private func decoded(_ s: String) -> String {
    let bytes = Array(s.utf8)
    return String(decoding: bytes.withUnsafeBufferPointer { AAN.decodeField($0) }, as: UTF8.self)
}

private func text(_ d: ArraySlice<UInt16>) -> String { String(decoding: d.map { UInt8($0 - 3) }, as: UTF8.self) }

@Suite("Retrieval") struct RetrievalTests {
    @Test func pythonBytesLiteralsAreDecoded() {
        #expect(decoded("b'a\\nb\\tc'") == "a\nb\tc")
        #expect(decoded("b\"it\\'s \\\"x\\\"\"") == "it's \"x\"")
        #expect(decoded("b'\\x41\\101\\\\z'") == "AA\\z")
        #expect(decoded("b'keep \\q'") == "keep \\q")
        #expect(decoded("b'\\x4'") == "\\x4")
        #expect(decoded("plain text") == "plain text" && decoded("b'") == "b'" && decoded("b'x\"") == "b'x\"")
    }

    @Test func aanFilesShareDocumentsById() throws {
        var documents = TokenSequences(), ids: [String: Int32] = [:]
        let tsv = "1\tp1\tp2\tb'first paper'\tb'second paper'\n0.0\tp2\tp3\tb'second paper'\tthird paper\r\n\n"
        let r = try AAN.read(Data(tsv.utf8), path: "a.tsv", limit: nil, documents: &documents, ids: &ids)
        #expect(r.labels == [1, 0] && r.members == [0, 1, 1, 2] && documents.count == 3)
        #expect(text(documents[2]) == "third paper")
        let cases: [(String, String)] = [("", "no pairs"), ("1\tp1\tp2\tx\n", "4 tab-separated fields"), ("2\tp1\tp2\tx\ty\n", "unknown label `2`")]
        for (tsv, message) in cases {
            var d = TokenSequences(), i: [String: Int32] = [:]
            do { _ = try AAN.read(Data(tsv.utf8), path: "a.tsv", limit: nil, documents: &d, ids: &i); Issue.record("accepted \(tsv.debugDescription)") } catch let e as UserError {
                #expect(e.description.contains(message), "\(e.description)")
            }
        }
    }

    @Test func imdbStandInPairsReviewsWithinEachSplit() throws {
        let dir = try scratchFolder("retrieval")
        defer { try? FileManager.default.removeItem(at: dir) }
        let package = try fixtureWheel(in: dir, csv: movieReviewsCSV(count: 80))
        let task = RetrievalTask(text: TextTask(package: package, python: "/nonexistent", heldOut: 8))
        #expect(!task.dataState(in: dir).isReady)
        var log: [String] = []
        try task.prepare(into: dir, seed: 5) { log.append($0) }
        #expect(log.contains { $0.contains("preparing those first") } && log.contains { $0.contains("64 / 8 / 8 review pairs") })
        #expect(task.dataState(in: dir).isReady)

        let data = try task.makeData(TaskDataOptions(length: 20, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        let split = try JSONDecoder().decode(IMDB.SplitManifest.self, from: Data(contentsOf: dir.appendingPathComponent("text/split.json")))
        let train = try #require(data.train as? LabelledSequences), test = try #require(data.test as? LabelledSequences)
        #expect(train.count == 64 && train.length == 40 && train.documentsPerSample == 2)
        #expect(Set(train.members.map(Int.init)).isSubset(of: Set(split.train)) && Set(test.members.map(Int.init)).isSubset(of: Set(split.test)))
        #expect(train.labels.filter { $0 == 1 }.count == 32)
        let reviewLabels = try IMDB.readMovieReviews(Data(movieReviewsCSV(count: 80)), path: "m").labels
        for s in 0..<train.count {
            let a = Int(train.members[2 * s]), b = Int(train.members[2 * s + 1])
            #expect((reviewLabels[a] == reviewLabels[b]) == (train.labels[s] == 1) && a != b)
        }
        guard case .tokens(let ids) = train.batch(samples: [0]).input else { Issue.record("not tokens"); return }
        #expect(ids.shape == [1, 40] && ids.scalars[0] == 1 && ids.scalars[20] == 1 && ids.scalars.contains(2))
        #expect(data.summary?.contains("not AAN") == true)

        // Text data prepared again with another seed: the pairs no longer match their splits.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("text"))
        try task.text.prepare(into: dir, seed: 6) { _ in }
        do { _ = try task.makeData(TaskDataOptions(length: 20, seed: 1, dataDirectory: dir.path), trainSamples: nil); Issue.record("accepted") } catch let e as UserError {
            #expect(e.description.contains("other text splits"))
        }
    }

    @Test func aanFolderIsPreferred() throws {
        let dir = try scratchFolder("aan")
        defer { try? FileManager.default.removeItem(at: dir) }
        let folder = dir.appendingPathComponent("lra_release/tsv_data")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (k, file) in AAN.files.enumerated() {
            let lines = (0..<6).map { "\($0 % 2)\tid\(k)-\($0)\tid\(k)-\($0 + 1)\tb'paper \($0)'\tb'paper \($0 + 1)'" }
            try Data(lines.joined(separator: "\n").utf8).write(to: folder.appendingPathComponent(file))
        }
        let task = RetrievalTask()
        #expect(task.dataState(in: dir).description.contains("AAN pairs"))
        let data = try task.makeData(TaskDataOptions(length: 16, seed: 1, trainLimit: 4, dataDirectory: dir.path), trainSamples: nil)
        #expect(data.train.count == 4 && data.validation.count == 6 && data.test.count == 6 && data.train.length == 32)
        #expect(data.summary?.contains("AAN") == true)
    }
}
