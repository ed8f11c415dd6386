import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

@Suite("Long documents") struct LongDocumentTests {
    @Test func classFoldersSplitInFileOrder() throws {
        let dir = try scratchFolder("longdoc")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (c, name) in ["cs.AI", "math.GR"].enumerated() {
            let folder = dir.appendingPathComponent("longdoc/\(name)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for i in 0..<10 { try Data("paper \(c) \(i)\nline two\n".utf8).write(to: folder.appendingPathComponent(String(format: "p%02d.txt", i))) }
        }
        let r = try LongDocuments.read(dir.appendingPathComponent("longdoc"))
        #expect(r.classes == ["cs.AI", "math.GR"] && r.labels.count == 20)
        #expect(r.train == Array(0..<7) + Array(10..<17) && r.validation == [7, 8, 17, 18] && r.test == [9, 19])
        // Line breaks became spaces; the text is stripped.
        #expect(String(decoding: r.documents[3].map { UInt8($0 - 3) }, as: UTF8.self) == "paper 0 3 line two")
        let task = LongDocumentTask()
        #expect(task.dataState(in: dir).isReady)
        let data = try task.makeData(TaskDataOptions(length: 12, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        #expect(data.train.count == 14 && data.validation.count == 4 && data.test.count == 2)
        #expect(data.summary?.contains("classes 0 cs.AI, 1 math.GR") == true && data.summary?.contains("truncated to 10 tokens") == true)
        // One class, or an empty document, is refused.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("longdoc/math.GR"))
        #expect(!task.dataState(in: dir).isReady)
        #expect(throws: UserError.self) { _ = try LongDocuments.read(dir.appendingPathComponent("longdoc")) }
    }

    @Test func shakespeareStandInKeepsWholePlaysInOneSplit() throws {
        let dir = try scratchFolder("longdoc-standin")
        defer { try? FileManager.default.removeItem(at: dir) }
        let texts = dir.appendingPathComponent("shakespeare")
        try FileManager.default.createDirectory(at: texts, withIntermediateDirectories: true)
        for (_, plays) in LongDocuments.genres {
            for (p, play) in plays.enumerated() {
                // 2.6 passages: two full ones and a tail of 0.6 (kept); distinct bytes per play.
                let size = LongDocuments.passageBytes * 2 + LongDocuments.passageBytes * 3 / 5
                try Data(repeating: UInt8(0x41 + p), count: size).write(to: texts.appendingPathComponent("\(play)_gut.txt"))
            }
        }
        let out = dir.appendingPathComponent("longdoc")
        let counts = try LongDocuments.writeStandIn(from: texts, to: out)
        // Comedies 15 plays → 10 / 3 / 2, histories 10 → 7 / 2 / 1, tragedies 12 → 8 / 2 / 2; 3 passages each.
        #expect(counts == ["train": 75, "validation": 21, "test": 15])
        let r = try LongDocuments.read(out)
        #expect(r.classes == ["comedy", "history", "tragedy"] && r.train.count == 75 && r.validation.count == 21 && r.test.count == 15)
        let trainPlays = Set(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("train/comedy").path).map { $0.split(separator: "-")[0] })
        let testPlays = Set(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("test/comedy").path).map { $0.split(separator: "-")[0] })
        #expect(trainPlays.isDisjoint(with: testPlays) && trainPlays.count == 10 && testPlays.count == 2)
        #expect(Set(r.test.map { r.labels[$0] }) == [0, 1, 2])
    }

    @Test("longdoc-32k: the same stand-in with passages of 32,766 bytes, its own folder, N 32768 by default")
    func standIn32K() throws {
        let dir = try scratchFolder("longdoc-32k")
        defer { try? FileManager.default.removeItem(at: dir) }
        let task = try #require(try TaskRegistry.task("longdoc-32k") as? LongDocumentTask)
        #expect(task.passageBytes == 32_766 && task.defaultLength == 32_768 && task.dataFolder == "longdoc-32k")
        #expect(LongDocumentTask().defaultLength == 16_384 && LongDocumentTask().dataFolder == "longdoc")
        // Not prepared: one line naming the command.
        let missing = #expect(throws: UserError.self) {
            _ = try task.makeData(TaskDataOptions(length: 32_768, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        }
        #expect(missing?.description.contains("longmixer data prepare longdoc-32k --data-dir") == true)

        let texts = dir.appendingPathComponent("shakespeare")
        try FileManager.default.createDirectory(at: texts, withIntermediateDirectories: true)
        for (_, plays) in LongDocuments.genres {
            for (p, play) in plays.enumerated() {
                // 1.4 passages of 32K: one full passage and a tail of 0.4 (dropped); as 2.8 passages of 16K.
                let size = task.passageBytes + task.passageBytes * 2 / 5
                try Data((0..<size).map { UInt8(0x41 + ($0 + p) % 26) }).write(to: texts.appendingPathComponent("\(play)_gut.txt"))
            }
        }
        let counts = try LongDocuments.writeStandIn(from: texts, to: dir.appendingPathComponent(task.dataFolder), passageBytes: task.passageBytes)
        // One passage per play: comedies 10 / 3 / 2, histories 7 / 2 / 1, tragedies 8 / 2 / 2.
        #expect(counts == ["train": 25, "validation": 7, "test": 5])
        #expect(task.dataState(in: dir).isReady && !LongDocumentTask().dataState(in: dir).isReady)
        let data = try task.makeData(TaskDataOptions(length: 32_768, seed: 1, dataDirectory: dir.path), trainSamples: nil)
        #expect(data.train.count == 25 && data.validation.count == 7 && data.test.count == 5)
        #expect(data.summary?.hasPrefix("longdoc-32k ") == true && data.summary?.contains("truncated") == false)
        // A row is CLS, the whole passage (bytes + 3), SEP: no PAD at N = 32768.
        let batch = data.test.batch(indices: 0..<1)
        guard case .tokens(let t) = batch.input else { Issue.record("not tokens"); return }
        #expect(t.shape == [1, 32_768] && t.scalars[0] == 1 && t.scalars[32_767] == 2 && !t.scalars[1..<32_767].contains(0))
    }
}
