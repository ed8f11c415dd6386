import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore
import LongMixerTestSupport

func scratchFolder(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Codes of whitespace-separated tokens (`]` for close).
private func codes(_ text: String) -> [UInt8] {
    text.split(separator: " ").map { t in
        t == "]" ? ListOps.close : UInt8(ListOps.tokenNames.firstIndex(of: String(t))!)
    }
}

private func readString(_ text: String, limit: Int? = nil) throws -> (documents: TokenSequences, labels: [Int32]) {
    try ListOps.read(Data(text.utf8), path: "t.tsv", limit: limit)
}

@Suite("ListOps") struct ListOpsTests {
    @Test func sourceTextIsTheReleasesLeftNestedForm() {
        #expect(String(decoding: ListOps.source(codes("[MAX 2 9 ]")), as: UTF8.self) == "( ( ( [MAX 2 ) 9 ) ] )")
        #expect(String(decoding: ListOps.source(codes("[SM 1 [MIN 3 4 ] ]")), as: UTF8.self)
                == "( ( ( [SM 1 ) ( ( ( [MIN 3 ) 4 ) ] ) ) ] )")
        #expect(String(decoding: ListOps.source(codes("7")), as: UTF8.self) == "7")
    }

    @Test func operatorsFollowTheReference() {
        #expect(ListOps.evaluate(codes("[MAX 2 9 ]")) == 9)
        #expect(ListOps.evaluate(codes("[MIN 2 9 0 ]")) == 0)
        #expect(ListOps.evaluate(codes("[MED 1 2 ]")) == 1)                    // 1.5 truncated
        #expect(ListOps.evaluate(codes("[MED 3 8 4 1 ]")) == 3)                // (3 + 4) / 2 = 3.5
        #expect(ListOps.evaluate(codes("[MED 9 8 9 ]")) == 9)
        #expect(ListOps.evaluate(codes("[SM 7 8 9 ]")) == 4)
        #expect(ListOps.evaluate(codes("[SM 1 [MIN 3 4 ] [MAX 1 [MED 0 9 ] ] ]")) == 8)   // 1 + 3 + max(1, 4)
        // Not one well-formed tree.
        for bad in ["[MAX ]", "[MAX 1", "1 2", "]", "[MAX 1 ] 3", "[MAX 1 ] [MIN 2 ]", ""] {
            #expect(ListOps.evaluate(codes(bad)) == nil, "\(bad)")
        }
    }

    @Test func readerTokenisesLikeTheCorrectedPipeline() throws {
        let r = try readString("Source\tTarget\r\n( ( ( [MAX 2 ) 9 ) ] )\t9\r\n( ( [SM 3 ) ] )\t3\r\n")
        // `[MAX` 14, 2 → 5, 9 → 12, `]` → X 13.
        #expect(Array(r.documents[0]) == [14, 5, 12, 13] && Array(r.documents[1]) == [17, 6, 13])
        #expect(r.labels == [9, 3])
        // LF line ends, no final newline, a limit.
        let lf = try readString("Source\tTarget\n( ( [MIN 3 ) ] )\t3\n( ( [MIN 4 ) ] )\t4", limit: 1)
        #expect(lf.labels == [3] && lf.documents.count == 1)
    }

    @Test func readerRefusesBadFilesNamingTheLine() {
        let cases: [(String, String)] = [
            ("", "empty"),
            ("Source\tTarget\n", "no samples"),
            ("Tree\tLabel\n( ( [MIN 3 ) ] )\t3\n", "header"),
            ("Source\tTarget\n( ( [MIN 3 ) ] ) 3\n", "t.tsv:2): no tab"),
            ("Source\tTarget\n( ( [MIN 3 ) ] )\t12\n", "not a digit"),
            ("Source\tTarget\n( ( [MIN 3 ) ] )\t\n", "not a digit"),
            ("Source\tTarget\n( ( [MIN 3 ) ] )\t3\n( ( [AVG 3 ) ] )\t3\n", "t.tsv:3): unknown token `[AVG`"),
            ("Source\tTarget\n( ( [MIN 3 ) )\t3\n", "not one well-formed tree"),
            ("Source\tTarget\n( ( [MIN 3 ) ] )\t4\n", "value is 3 but its label is 4"),
        ]
        for (text, message) in cases {
            do {
                _ = try readString(text)
                Issue.record("accepted: \(text.debugDescription)")
            } catch let e as UserError {
                #expect(e.description.contains(message), "\(e.description) should contain \(message)")
            } catch { Issue.record("\(error)") }
        }
    }

    @Test func generatedTreesFollowTheLengthFilterAndTheirLabels() throws {
        let g = ListOps.generate(seed: 5, sizes: SplitSizes(train: 120, validation: 20, test: 20))
        let all = g.train + g.validation + g.test
        #expect(g.train.count == 120 && g.validation.count == 20 && g.test.count == 20)
        #expect(Set(all.map(\.codes)).count == all.count)                        // unique across splits
        #expect(all.allSatisfy { (501...1999).contains($0.codes.count) })
        #expect(all.allSatisfy { ListOps.evaluate($0.codes) == $0.label })
        // About 8 % of drawn trees pass the filter (reference: 8.3 %); mean length about 1,060.
        let accepted = Double(all.count) / Double(g.drawn)
        #expect(accepted > 0.04 && accepted < 0.14, "acceptance \(accepted)")
        let mean = Double(all.reduce(0) { $0 + $1.codes.count }) / Double(all.count)
        #expect(mean > 850 && mean < 1300, "mean length \(mean)")
        #expect(Set(all.map(\.label)).count >= 6)
        // Labels recomputed from the parsed text of every line equal the generator's.
        let text = ListOps.tsv(all)
        let read = try ListOps.read(text, path: "g.tsv")
        #expect(read.labels == all.map { Int32($0.label) })
        for (i, s) in all.enumerated() {
            #expect(Array(read.documents[i]) == s.codes.map { UInt16($0) + ListOps.idOffset })
            #expect(ListOps.evaluate(read.documents[i].map { UInt8($0 - ListOps.idOffset) }) == s.label)
        }
    }

    @Test func sameSeedSameBytesAcrossThreadCountsDifferentSeedDifferentBytes() {
        let sizes = SplitSizes(train: 30, validation: 5, test: 5)
        var outputs: [[Data]] = []
        withEachThreadCount { _ in
            let g = ListOps.generate(seed: 7, sizes: sizes)
            outputs.append([g.train, g.validation, g.test].map(ListOps.tsv))
        }
        #expect(outputs[0] == outputs[1])
        let other = ListOps.generate(seed: 8, sizes: sizes)
        #expect(ListOps.tsv(other.train) != outputs[0][0])
    }

    @Test func preparedFolderTrainsAndReportsItsState() throws {
        let dir = try scratchFolder("listops")
        defer { try? FileManager.default.removeItem(at: dir) }
        let task = ListOpsTask()
        #expect(!task.dataState(in: dir).isReady)
        let options = TaskDataOptions(length: 1999, seed: 1, trainLimit: 10, dataDirectory: dir.path)
        do { _ = try task.makeData(options, trainSamples: nil); Issue.record("no data, no error") } catch let e as UserError {
            #expect(e.description.contains("longmixer data prepare listops --data-dir \(dir.path)"))
        }
        var lines: [String] = []
        try task.prepare(into: dir, seed: 3, sizes: SplitSizes(train: 24, validation: 6, test: 6)) { lines.append($0) }
        #expect(lines.contains { $0.contains("36 kept") })
        let state = task.dataState(in: dir)
        #expect(state.isReady && state.description.contains("seed 3: 24 / 6 / 6 trees"))
        // A second preparation with the same seed writes the same bytes.
        let again = try scratchFolder("listops-again")
        defer { try? FileManager.default.removeItem(at: again) }
        try task.prepare(into: again, seed: 3, sizes: SplitSizes(train: 24, validation: 6, test: 6)) { _ in }
        for f in ListOps.splitFiles {
            #expect(try Data(contentsOf: dir.appendingPathComponent("listops/\(f)")) == Data(contentsOf: again.appendingPathComponent("listops/\(f)")))
        }

        let data = try task.makeData(options, trainSamples: nil)
        #expect(data.train.count == 10 && data.validation.count == 6 && data.test.count == 6)
        #expect(data.trainingOrder == .shuffled(seed: 1))
        #expect(data.summary?.contains("train 10 trees") == true)
        guard case .tokens(let ids) = data.train.batch(samples: [3, 1]).input else { Issue.record("not tokens"); return }
        #expect(ids.shape == [2, 1999] && ids.scalars.allSatisfy { (0..<18).contains($0) } && ids.scalars.contains(0))
        // A shorter N cuts trees, and says so.
        let short = try task.makeData(TaskDataOptions(length: 400, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        #expect(short.summary?.contains("24 truncated to 400 tokens") == true)

        // The release's folder name is found too; a folder missing a split is not ready.
        let release = try scratchFolder("listops-release")
        defer { try? FileManager.default.removeItem(at: release) }
        try FileManager.default.copyItem(at: dir.appendingPathComponent("listops"), to: release.appendingPathComponent("listops-1000"))
        try FileManager.default.removeItem(at: release.appendingPathComponent("listops-1000/prepared.json"))
        #expect(task.dataState(in: release).description.contains("release layout"))
        try FileManager.default.removeItem(at: release.appendingPathComponent("listops-1000/basic_val.tsv"))
        #expect(!task.dataState(in: release).isReady)
    }

    @Test func fixedSizeTasksRefuseSizes() throws {
        struct Fixed: PreparableTask {
            var name: String { "fixed" }
            var summary: String { "" }
            var input: TaskInput { .tokens(vocabulary: 3, paddingIndex: 0) }
            var objective: TaskObjective { .binary }
            var isCausal: Bool { false }
            var dataOptions: Set<TaskDataOption> { [] }
            var minimumLength: Int { 1 }
            var dataFolder: String { "fixed" }
            func dataState(in dataDirectory: URL) -> PreparedDataState { PreparedDataState(isReady: false, description: "") }
            func prepare(into dataDirectory: URL, seed: UInt64, log: (String) -> Void) throws {}
            func makeData(_ options: TaskDataOptions, trainSamples: Int?) throws -> TaskData { fatalError() }
        }
        #expect(throws: UserError.self) { try Fixed().prepare(into: URL(fileURLWithPath: "/nonexistent"), seed: 1, sizes: SplitSizes()) { _ in } }
        #expect(throws: Never.self) { try Fixed().prepare(into: URL(fileURLWithPath: "/nonexistent"), seed: 1, sizes: nil) { _ in } }
    }
}
