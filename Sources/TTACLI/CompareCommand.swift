/// `tta compare`: several methods on the same stream, each from the source model, and the table
/// papers print (rows: methods; columns: domains in stream order, then the mean).
struct CompareCommand: ExperimentCommand {
    static let name = CommandName.compare
    static let abstract = "Run several methods on the same stream and print the error table."
    static let discussion = """
    Each method starts from the source model, freshly loaded from --weights, and runs the whole stream; the table has \
    one row per method and one column per corruption (in stream order) plus the mean, errors in percent. Images per \
    second, time and peak memory follow.
    With no --dataset, --data-dir or --weights it runs the benchmark embedded in the repository: FMNIST-C \
    (data/fashion-mnist-c, 15 corruptions x 200 images, severity 5) with data/models/fmnist-wrn-*.safetensors, batch \
    size 50 (200 would be one adaptation step per domain), shuffled order, seed 1. TTA_EMBEDDED_DIR overrides the \
    folder that holds fashion-mnist-c/ and models/.
    Ctrl-C stops after the current batch: the finished domains are printed and written, and the exit code is 130.
    """
    static let usage = "tta compare [options]"

    let options: ExperimentOptions
}
