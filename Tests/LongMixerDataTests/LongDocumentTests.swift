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
}
