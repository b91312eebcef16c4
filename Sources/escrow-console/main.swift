import Foundation
import Dispatch
import EscrowCore
import HTTPServer
import Console
import Identity
#if canImport(Glibc)
import Glibc
#endif

let help = """
escrow-console: the EscrowFleet operators' web console (transfer inbox, fleet, device detail, live events).

Operators log in with their broker username and password; each browser session gets its own MQTT
connection as that operator, so the broker decides what they see and may do.

USAGE
  escrow-console [--listen HOST:PORT] [--broker URL] [--ca FILE]

OPTIONS
  --listen HOST:PORT   where to serve HTTP (default 127.0.0.1:8080: this host only; put a TLS
                       proxy in front to serve others, with --secure-cookies)
  --broker URL         the broker's operator listener (default mqtt://127.0.0.1:1883)
  --ca FILE            with an mqtts:// broker: the CA that signed its certificate
                       (escrowd --operator-tls: DATA/platform-ca.pem)
  --idle-timeout D     log a session out after this long without a request (default 15m)
  --tls-cert FILE      serve HTTPS with this certificate chain (PEM), for example escrowd's
                       DATA/broker/certs/server.pem, which the platform CA signed
  --tls-key FILE       its private key (DATA/broker/certs/server.key); implies --secure-cookies
  --secure-cookies     mark the session cookie Secure (behind an HTTPS proxy)
  -h, --help           show this text
  --version            print the version and exit

EXAMPLES
  escrow-console                                   # then open http://127.0.0.1:8080/
  escrow-console --listen 127.0.0.1:9000 --broker mqtts://mqtt.example.com:1883 --ca platform-ca.pem
  escrow-console --listen 0.0.0.0:8443 --tls-cert escrow-data/broker/certs/server.pem --tls-key escrow-data/broker/certs/server.key
"""

func fail(_ message: String, _ code: Int32) -> Never {
    FileHandle.standardError.write(Data("escrow-console: \(message)\n".utf8))
    exit(code)
}

signal(SIGPIPE, SIG_IGN)
let argv = Array(CommandLine.arguments.dropFirst())
if EscrowFleetVersion.requested(argv) { print(EscrowFleetVersion.line("escrow-console", commit: BuildStamp.commit)); exit(0) }
let args: Arguments
do {
    args = try Arguments(argv, valued: ["listen", "broker", "ca", "idle-timeout", "tls-cert", "tls-key"], booleans: ["help", "secure-cookies"])
    if !args.positionals.isEmpty { throw UsageError("unexpected argument '\(args.positionals[0])'") }
} catch {
    fail("\(error) (see escrow-console --help)", UsageError.exitCode)
}
if args.flag("help") { print(help); exit(0) }

var options = Console.Options(broker: args.value("broker") ?? "mqtt://127.0.0.1:1883", caFile: args.value("ca"))
options.secureCookies = args.flag("secure-cookies")
do {
    if let s = try args.seconds("idle-timeout") { options.idleTimeout = .seconds(max(60, s)) }
} catch {
    fail("\(error) (see escrow-console --help)", UsageError.exitCode)
}
options.log = { line in FileHandle.standardError.write(Data("\(Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))) \(line)\n".utf8)) }
let listen = args.value("listen") ?? "127.0.0.1:8080"
/// TLS over an accepted socket, for HTTPServer (which may not use OpenSSL itself).
struct TLSTransport: HTTPTransport {
    let connection: TLSServerConnection
    func receive(into buffer: inout [UInt8]) -> Int { connection.read(into: &buffer) }
    func send(_ bytes: [UInt8]) -> Bool { connection.write(bytes) }
}
var transport: (@Sendable (Int32) throws -> any HTTPTransport)?
switch (args.value("tls-cert"), args.value("tls-key")) {
case (nil, nil): break
case (let cert?, let key?):
    do {
        let tls = try TLSServerContext(certificateFile: cert, keyFile: key)
        transport = { fd in TLSTransport(connection: try tls.accept(fd)) }
        options.secureCookies = true
    } catch {
        fail("cannot serve HTTPS: \(error)", 66)
    }
default:
    fail("--tls-cert and --tls-key go together (see escrow-console --help)", UsageError.exitCode)
}
let console = Console(options: options)
let server: HTTPServer
do {
    server = try HTTPServer(listen: listen, transport: transport) { console.handle($0) }
} catch {
    fail("--listen \(listen): \(error)", 69)
}
server.start()
options.log("escrow-console: serving \(transport == nil ? "http" : "https")://\(server.host):\(server.port)/ for operators of \(options.broker)")
signal(SIGINT, SIG_IGN); signal(SIGTERM, SIG_IGN)
let sources = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
    let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
    s.setEventHandler { server.stop(); exit(0) }
    s.resume()
    return s
}
withExtendedLifetime(sources) { dispatchMain() }
