import Foundation
import OperatorCLI

// escrowctl: everything lives in OperatorCLI; this file only hands over the arguments.
exit(await CLI.main(Array(CommandLine.arguments.dropFirst())))
