import TTACLI

TTACLI.exit(TTACLI.main(arguments: Array(CommandLine.arguments.dropFirst()), console: .standard()))
