import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerData
import LongMixerModels

/// `--overwrite` replaces only a LongMixer run directory, never a folder the user works in or reads
/// from, and never loses the previous run before the new one has written its weights.
///
/// Every test passes its own working and home directories, so a regression can only ever touch
/// the test's temporary folder.
@Suite("RunDirectory overwrite", .serialized)
struct RunDirectoryOverwriteTests {
    let fm = FileManager.default

    func scratch(_ name: String) throws -> URL {
        let url = fm.temporaryDirectory.appendingPathComponent("longmixer-overwrite-\(name)-\(UUID().uuidString)")
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        return url.resolvingSymlinksInPath()
    }

    func write(_ text: String, _ url: URL) throws {
        try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func contents(_ url: URL) -> Set<String> { Set((try? fm.contentsOfDirectory(atPath: url.path)) ?? []) }

    /// A finished run: marker, config and weights.
    func finishedRun(at url: URL, weights: String) throws {
        let run = try RunDirectory.prepare(url, overwrite: false, workingDirectory: url.deletingLastPathComponent(), home: fm.temporaryDirectory)
        try write("{}", run.configURL)
        try write(weights, run.weightsURL)
        try run.commitReplacement()
    }

    func refuses(_ url: URL, inputs: [URL] = [], workingDirectory: URL, home: URL, containing needle: String) {
        let before = contents(url)
        do {
            _ = try RunDirectory.prepare(url, overwrite: true, inputs: inputs, workingDirectory: workingDirectory, home: home)
            Issue.record("prepare(\(url.path), overwrite: true) was accepted")
        } catch let e as UserError {
            #expect(e.kind == .usage)
            #expect(e.description.contains(needle), "\(e)")
        } catch {
            Issue.record("not a UserError: \(error)")
        }
        #expect(contents(url) == before, "contents changed")
        #expect(RunDirectory.interruptedReplacements(of: url).isEmpty)
    }

    @Test("the working directory, its parents, the home directory, / and folders holding inputs are refused")
    func protectedFolders() throws {
        let root = try scratch("protected")
        defer { try? fm.removeItem(at: root) }
        let project = root.appendingPathComponent("project")
        try write("source", project.appendingPathComponent("main.swift"))
        try write("corpus", project.appendingPathComponent("data/c.txt"))
        // Even with a marker (someone trained into their project folder before): never the working directory.
        try write("", project.appendingPathComponent(RunDirectory.markerName))
        let elsewhere = root.appendingPathComponent("elsewhere")
        try fm.createDirectory(at: elsewhere, withIntermediateDirectories: true)

        refuses(project, workingDirectory: project, home: elsewhere, containing: "working directory")
        refuses(URL(fileURLWithPath: project.path + "/."), workingDirectory: project, home: elsewhere, containing: "working directory")
        refuses(project, workingDirectory: project.appendingPathComponent("data"), home: elsewhere, containing: "working directory")
        refuses(project, workingDirectory: elsewhere, home: project, containing: "home")
        let unrelated = URL(fileURLWithPath: "/nonexistent-\(UUID().uuidString)")
        refuses(root, workingDirectory: unrelated, home: project, containing: "home")
        refuses(URL(fileURLWithPath: "/"), workingDirectory: elsewhere, home: elsewhere, containing: "/")
        refuses(project, inputs: [project.appendingPathComponent("data/c.txt")], workingDirectory: elsewhere, home: elsewhere, containing: "c.txt")
        refuses(project, inputs: [project.appendingPathComponent("data")], workingDirectory: elsewhere, home: elsewhere, containing: "data")
        // Through a symbolic link to the input.
        let link = elsewhere.appendingPathComponent("link.txt")
        try fm.createSymbolicLink(at: link, withDestinationURL: project.appendingPathComponent("data/c.txt"))
        refuses(project, inputs: [link], workingDirectory: elsewhere, home: elsewhere, containing: "link.txt")
        #expect(try String(contentsOf: project.appendingPathComponent("main.swift"), encoding: .utf8) == "source")
    }

    @Test("a folder that is not a run directory is refused; an empty one is used")
    func notARunDirectory() throws {
        let root = try scratch("notrun")
        defer { try? fm.removeItem(at: root) }
        let folder = root.appendingPathComponent("notes")
        try write("mine", folder.appendingPathComponent("notes.txt"))
        refuses(folder, workingDirectory: root.appendingPathComponent("cwd"), home: root.appendingPathComponent("home"),
                containing: RunDirectory.markerName)
        let empty = root.appendingPathComponent("empty")
        try fm.createDirectory(at: empty, withIntermediateDirectories: true)
        let run = try RunDirectory.prepare(empty, overwrite: true, workingDirectory: root, home: root.appendingPathComponent("home"))
        #expect(contents(run.url) == [RunDirectory.markerName])
    }

    @Test("a run directory is replaced: old contents aside until commit, restored on rollback")
    func replaceAndRollBack() throws {
        let root = try scratch("replace")
        defer { try? fm.removeItem(at: root) }
        let dir = root.appendingPathComponent("run")
        try finishedRun(at: dir, weights: "old model")
        let home = root.appendingPathComponent("home")

        // Failure: the new run's files go, the old run comes back.
        let failing = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: home)
        #expect(contents(dir) == [RunDirectory.markerName])
        try write("partial", failing.configURL)
        failing.rollBackReplacement()
        #expect(try String(contentsOf: dir.appendingPathComponent("model.safetensors"), encoding: .utf8) == "old model")
        #expect(RunDirectory.interruptedReplacements(of: dir).isEmpty)

        // `finishing` commits on success: the aside is removed only then.
        let run = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: home)
        #expect(RunDirectory.interruptedReplacements(of: dir).count == 1)
        try run.finishing {
            try write("new model", run.weightsURL)
        }
        #expect(try String(contentsOf: run.weightsURL, encoding: .utf8) == "new model")
        #expect(RunDirectory.interruptedReplacements(of: dir).isEmpty)
        #expect(contents(root) == ["run"])

        // `finishing` rolls back when the body throws.
        let again = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: home)
        struct Boom: Error {}
        #expect(throws: Boom.self) { try again.finishing { try write("broken", again.weightsURL); throw Boom() } }
        #expect(try String(contentsOf: dir.appendingPathComponent("model.safetensors"), encoding: .utf8) == "new model")
        #expect(contents(root) == ["run"])
    }

    @Test("a run killed during --overwrite leaves the previous run recoverable and does not block the next one")
    func killedRun() throws {
        let root = try scratch("killed")
        defer { try? fm.removeItem(at: root) }
        let dir = root.appendingPathComponent("run")
        let home = root.appendingPathComponent("home")
        try finishedRun(at: dir, weights: "previous model")

        // Simulated kill -9: prepared, partly written, never committed or rolled back.
        let killed = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: home)
        try write("partial", killed.configURL)
        let aside = RunDirectory.interruptedReplacements(of: dir)
        #expect(aside.count == 1)
        #expect(try String(contentsOf: aside[0].appendingPathComponent("model.safetensors"), encoding: .utf8) == "previous model")
        // Without --overwrite the partial run is still protected, and the error says where the previous one is.
        let e = #expect(throws: UserError.self) { try RunDirectory.prepare(dir, overwrite: false, workingDirectory: root, home: home) }
        #expect(e?.description.contains(aside[0].path) == true, "\(String(describing: e))")

        // Recovery puts the previous run back in place (the partial one is kept aside in its stead).
        let restored = try RunDirectory.recoverInterruptedReplacement(of: dir)
        #expect(restored == dir)
        #expect(try String(contentsOf: dir.appendingPathComponent("model.safetensors"), encoding: .utf8) == "previous model")

        // A later run is not blocked by leftovers, and its commit cleans them.
        _ = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: home)
        let next = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: home)
        #expect(RunDirectory.interruptedReplacements(of: dir).count >= 2)
        try write("next model", next.weightsURL)
        try next.commitReplacement()
        #expect(RunDirectory.interruptedReplacements(of: dir).isEmpty)
        #expect(contents(root) == ["run"])
        #expect(try String(contentsOf: dir.appendingPathComponent("model.safetensors"), encoding: .utf8) == "next model")
    }

    @Test("a run directory written before the marker existed is still recognised by its files")
    func legacyRunDirectory() throws {
        let root = try scratch("legacy")
        defer { try? fm.removeItem(at: root) }
        let dir = root.appendingPathComponent("run")
        for name in ["config.json", "metrics.jsonl", "model.safetensors", "summary.json"] { try write("x", dir.appendingPathComponent(name)) }
        let run = try RunDirectory.prepare(dir, overwrite: true, workingDirectory: root, home: root.appendingPathComponent("home"))
        try run.commitReplacement()
        #expect(contents(dir) == [RunDirectory.markerName])
        try write("x", dir.appendingPathComponent("notes.txt"))
        try fm.removeItem(at: dir.appendingPathComponent(RunDirectory.markerName))
        refuses(dir, workingDirectory: root, home: root.appendingPathComponent("home"), containing: RunDirectory.markerName)
    }
}
