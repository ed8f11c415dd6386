import ArgumentParser
import Foundation
import LongMixerTraining

/// `longmixer report`: regenerate a run's report from its files.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a run's report.md, metrics.csv and plots/*.svg (loss and metric against steps and wall time) from its files.",
        discussion: """
            Every run writes its report when it ends (or stops); this regenerates it from config.json, \
            metrics.jsonl and summary.json, also for a run that is still going or was stopped.
            """)

    @Argument(help: ArgumentHelp("The run directory.", valueName: "run-dir"))
    var runDirectory: String

    func run() throws {
        let report = try RunReport.write(URL(fileURLWithPath: runDirectory))
        print("report: \(report.path)")
    }
}
