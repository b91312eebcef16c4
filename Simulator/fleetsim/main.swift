import FleetEngine
import Glibc

// fleetsim: drive a simulated escrow fleet against an MQTT broker. All logic lives in FleetEngine.
let stop = StopFlag()
let signalSources = stop.installSignalHandlers()
exit(FleetMain.run(Array(CommandLine.arguments.dropFirst()), stop: stop))
