import Foundation
import OperatorCLI
import EscrowCore
#if canImport(Glibc)
import Glibc
#endif

// escrowctl: everything lives in OperatorCLI; this file only hands over the arguments.
// A broker that closes the socket mid-write is an error to report, not a silent SIGPIPE death.
signal(SIGPIPE, SIG_IGN)
let argv = Array(CommandLine.arguments.dropFirst())
if EscrowFleetVersion.requested(argv) { print(EscrowFleetVersion.line("escrowctl", commit: BuildStamp.commit)); exit(0) }
exit(await CLI.main(argv))
