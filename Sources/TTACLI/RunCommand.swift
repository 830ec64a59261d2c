/// `tta run`: one method over the stream, each domain printed as it finishes, then the summary.
struct RunCommand: ExperimentCommand {
    static let name = CommandName.run
    static let abstract = "Run one method, printing each domain as it finishes."
    static let discussion = """
    Takes the same options as 'tta compare', with --method instead of --methods. In the table format each finished \
    domain is printed as it completes; the other formats print only the results.
    Ctrl-C stops after the current batch: the finished domains are printed and written, and the exit code is 130.
    """
    static let usage = "tta run [--method <name>] [options]"

    let options: ExperimentOptions
}
