import Foundation
import OperatorCLI
#if canImport(Glibc)
import Glibc
#endif

// escrowctl: everything lives in OperatorCLI; this file only hands over the arguments.
// A broker that closes the socket mid-write is an error to report, not a silent SIGPIPE death.
signal(SIGPIPE, SIG_IGN)
exit(await CLI.main(Array(CommandLine.arguments.dropFirst())))
