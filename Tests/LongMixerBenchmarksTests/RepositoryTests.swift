import Foundation
import Testing
import LongMixerBenchmarks

/// The repository speaks of the product: no one machine's paths in code, scripts or documentation,
/// and the benchmark page is what `longmixer bench report` makes of the committed JSON.
@Suite("Repository")
struct RepositoryTests {
    /// The package root, located from this source file.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Text files under the folders that hold code, scripts and documentation (fixtures excluded: they are data).
    static func textFiles() throws -> [URL] {
        var files: [URL] = [root.appendingPathComponent("README.md"), root.appendingPathComponent("Package.swift")]
        for folder in ["Sources", "Tests", "Scripts", "docs"] {
            let enumerator = FileManager.default.enumerator(at: root.appendingPathComponent(folder), includingPropertiesForKeys: nil)
            while let url = enumerator?.nextObject() as? URL {
                if url.path.contains("/Tests/Fixtures/") { continue }
                if ["swift", "md", "py", "c", "h", "json", "svg", "sh", "modulemap"].contains(url.pathExtension) { files.append(url) }
            }
        }
        return files
    }

    @Test func noMachinePaths() throws {
        // Built from pieces so that this file does not match itself.
        let prefixes = ["work", "opt", "tmp", "root", "home"].map { "/" + $0 + "/" }
        var found: [String] = []
        let files = try Self.textFiles()
        #expect(files.count > 50, "found only \(files.count) files under \(Self.root.path)")
        for url in files {
            let text = try String(contentsOf: url, encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                for p in prefixes where line.contains(p) {
                    // Only a token that starts with a prefix is a path; a relative path may contain one.
                    let tokens = line.split(whereSeparator: { " \t\"'`(=:,".contains($0) })
                    if tokens.contains(where: { $0.hasPrefix(p) }) {
                        found.append("\(url.path.dropFirst(Self.root.path.count + 1)):\(n + 1): \(line.prefix(100))")
                    }
                }
            }
        }
        #expect(found.isEmpty, "machine paths:\n\(found.prefix(10).joined(separator: "\n"))")
    }

    @Test func benchmarkPageIsGeneratedFromItsJSON() throws {
        let docs = Self.root.appendingPathComponent("docs")
        let expected = try BenchmarkDocument.render(directory: docs.appendingPathComponent("benchmarks"), linkPrefix: "benchmarks")
        let page = try String(contentsOf: docs.appendingPathComponent("benchmarks.md"), encoding: .utf8)
        #expect(page == expected, "docs/benchmarks.md is out of date: run `longmixer bench report`")
        // Tables, not console dumps: about 40 lines per section, with both instruction-set paths of each
        // benchmark side by side.
        #expect(page.split(separator: "\n", omittingEmptySubsequences: false).count < 450)
    }
}
