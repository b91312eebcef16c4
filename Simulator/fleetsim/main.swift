import FleetEngine
import EscrowCore
import Glibc

// fleetsim: drive a simulated escrow fleet against an MQTT broker. All logic lives in FleetEngine.
let arguments = Array(CommandLine.arguments.dropFirst())
if EscrowFleetVersion.requested(arguments) { print(EscrowFleetVersion.line("fleetsim", commit: BuildStamp.commit)); exit(0) }
let stop = StopFlag()
let signalSources = stop.installSignalHandlers()
exit(FleetMain.run(arguments, stop: stop, version: EscrowFleetVersion.line("fleetsim", commit: BuildStamp.commit)))
