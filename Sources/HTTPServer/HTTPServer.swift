import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/1.1 request, as far as this server reads it.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query string.
    public var path: String
    public var query: [String: String]
    /// Header names lowercased.
    public var headers: [String: String]
    public var body: [UInt8]
}

/// The byte stream under one connection: the socket itself, or TLS over it (`HTTPServer`'s
/// `transport`, supplied by a module that may use OpenSSL).
public protocol HTTPTransport {
    /// Up to `buffer.count` bytes; 0 at the end of the stream, < 0 on a timeout or failure.
    func receive(into buffer: inout [UInt8]) -> Int
    /// All of `bytes`; false once the peer is gone.
    func send(_ bytes: [UInt8]) -> Bool
}

/// Plain TCP.
struct SocketTransport: HTTPTransport {
    let fd: Int32
    func receive(into buffer: inout [UInt8]) -> Int { buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
    func send(_ bytes: [UInt8]) -> Bool { HTTPServer.write(fd, bytes) }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// A body written over time (server-sent events), started after the head with a writer (false
    /// once the client is gone) and `finish` (ends the response). It returns how to stop the
    /// producer: the server calls that when the client hangs up, an event on the socket it waits for.
    public typealias Stream = @Sendable (_ write: @escaping @Sendable ([UInt8]) -> Bool, _ finish: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)
    public var stream: Stream?
    public init(status: Int, contentType: String = "text/plain; charset=utf-8", headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status
        self.headers = [("Content-Type", contentType)] + headers
        self.body = body
    }
    public static func streaming(contentType: String, headers: [(String, String)] = [], _ stream: @escaping Stream) -> HTTPResponse {
        var r = HTTPResponse(status: 200, contentType: contentType, headers: headers, body: [])
        r.stream = stream
        return r
    }
    public init(status: Int, text: String) { self.init(status: status, body: Array(text.utf8)) }

    static func reason(_ status: Int) -> String {
        [200: "OK", 204: "No Content", 303: "See Other", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
         413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"][status] ?? "Status"
    }
}

/// A small HTTP/1.1 server on its own threads (never Swift's cooperative pool): an accept thread
/// and one thread per connection, at most `maxConnections` at once. One request per connection
/// (`Connection: close`); heads over 16 KiB, bodies over 1 MiB and clients silent for 10 s are refused.
/// The handler runs on the connection's thread and may block (for example to await an actor).
public final class HTTPServer: Sendable {
    public typealias Handler = @Sendable (HTTPRequest) -> HTTPResponse

    public static let maxHeadBytes = 16 * 1024
    public static let maxBodyBytes = 1024 * 1024
    public let host: String
    /// The bound port (the kernel's choice when 0 was asked for).
    public let port: Int
    private let listener: Int32
    private let wake: (read: Int32, write: Int32)
    private let handler: Handler
    private let transport: (@Sendable (Int32) throws -> any HTTPTransport)?
    private let maxConnections: Int
    private let active = Mutex(0)
    private let stopped = Mutex(false)

    /// Binds and listens (errors are thrown here, before any thread starts); `start()` serves.
    /// `transport` wraps each accepted socket (a TLS handshake, say); a throw closes the connection.
    public init(host: String = "127.0.0.1", port: Int, maxConnections: Int = 64,
                transport: (@Sendable (Int32) throws -> any HTTPTransport)? = nil, handler: @escaping Handler) throws {
        self.host = host
        self.handler = handler
        self.transport = transport
        self.maxConnections = maxConnections
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw HTTPServerError("'\(host)' is not an IPv4 address (use 127.0.0.1 or 0.0.0.0)")
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 128) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw HTTPServerError("cannot listen on \(host):\(port): \(reason)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        listener = fd
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { close(fd); throw HTTPServerError("pipe: \(String(cString: strerror(errno)))") }
        wake = (fds[0], fds[1])
    }

    /// `HOST:PORT`, as `--http` and `--listen` take it (`127.0.0.1:9464`; port 0: the kernel's choice).
    public convenience init(listen address: String, maxConnections: Int = 64,
                            transport: (@Sendable (Int32) throws -> any HTTPTransport)? = nil, handler: @escaping Handler) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw HTTPServerError("expected HOST:PORT, for example 127.0.0.1:9464; got '\(address.prefix(80))'")
        }
        try self.init(host: String(address[..<colon]), port: port, maxConnections: maxConnections, transport: transport, handler: handler)
    }

    public func start() {
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "http-accept-\(port)"
        thread.start()
    }

    /// Stops accepting; connections in progress finish on their own threads.
    public func stop() {
        let first = stopped.withLock { s -> Bool in defer { s = true }; return !s }
        guard first else { return }
        var byte: UInt8 = 1
        _ = Glibc.write(wake.write, &byte, 1)
    }

    private func acceptLoop() {
        defer { close(listener); close(wake.read); close(wake.write) }
        while true {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, -1)
            if n < 0 { if errno == EINTR { continue }; return }
            if fds[1].revents != 0 { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            let admitted = active.withLock { count -> Bool in
                guard count < maxConnections else { return false }
                count += 1
                return true
            }
            guard admitted else {
                if transport == nil { Self.send(SocketTransport(fd: client), HTTPResponse(status: 503, text: "too many connections\n")) }
                close(client)
                continue
            }
            let thread = Thread { [self] in
                serve(client)
                close(client)
                active.withLock { $0 -= 1 }
            }
            thread.name = "http-conn"
            thread.start()
        }
    }

    private func serve(_ fd: Int32) {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connection: any HTTPTransport
        if let transport {
            guard let wrapped = try? transport(fd) else { return }
            connection = wrapped
        } else {
            connection = SocketTransport(fd: fd)
        }
        switch Self.read(connection) {
        case .failure(let refusal): Self.send(connection, refusal.response, fd: fd)
        case .success(let request):
            Self.send(connection, handler(request), head: request.method == "HEAD", fd: fd)
        }
    }

    /// Reads one request: the head up to CRLFCRLF, then Content-Length bytes of body.
    static func read(_ connection: any HTTPTransport) -> Result<HTTPRequest, Refusal> {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var headEnd: Int?
        while headEnd == nil {
            let n = connection.receive(into: &chunk)
            if n <= 0 { return .failure(Refusal(HTTPResponse(status: n == 0 ? 400 : 408, text: "incomplete request\n"))) }
            buffer += chunk[0..<n]
            headEnd = find(buffer, [13, 10, 13, 10])
            if headEnd == nil, buffer.count > maxHeadBytes { return .failure(Refusal(HTTPResponse(status: 431, text: "request head over \(maxHeadBytes) bytes\n"))) }
        }
        guard let end = headEnd, end <= maxHeadBytes, let head = String(validating: buffer[0..<end], as: UTF8.self) else {
            return .failure(Refusal(HTTPResponse(status: end(headEnd) > maxHeadBytes ? 431 : 400, text: "request head is not valid UTF-8 or too large\n")))
        }
        let lines = head.components(separatedBy: "\r\n")
        let requestLine = lines[0].split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1."), requestLine[1].hasPrefix("/"),
              requestLine[0].allSatisfy({ $0.isUppercase }) else {
            return .failure(Refusal(HTTPResponse(status: 400, text: "malformed request line\n")))
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { return .failure(Refusal(HTTPResponse(status: 400, text: "malformed header line\n"))) }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(buffer[(end + 4)...])
        let length = Int(headers["content-length"] ?? "0") ?? -1
        guard length >= 0 else { return .failure(Refusal(HTTPResponse(status: 400, text: "bad Content-Length\n"))) }
        guard length <= maxBodyBytes else { return .failure(Refusal(HTTPResponse(status: 413, text: "body over \(maxBodyBytes) bytes\n"))) }
        while body.count < length {
            var part = [UInt8](repeating: 0, count: min(chunk.count, length - body.count))
            let n = connection.receive(into: &part)
            if n <= 0 { return .failure(Refusal(HTTPResponse(status: 408, text: "incomplete body\n"))) }
            body += part[0..<n]
        }
        let target = requestLine[1]
        let (path, queryText) = target.firstIndex(of: "?").map { (String(target[..<$0]), String(target[target.index(after: $0)...])) } ?? (target, "")
        var query: [String: String] = [:]
        for pair in queryText.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            query[kv[0]] = kv.count > 1 ? kv[1] : ""
        }
        return .success(HTTPRequest(method: requestLine[0], path: path.removingPercentEncoding ?? path, query: query, headers: headers, body: body))
    }

    private static func end(_ i: Int?) -> Int { i ?? 0 }

    static func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle { return i }
        return nil
    }

    static func send(_ connection: any HTTPTransport, _ r: HTTPResponse, head: Bool = false, fd: Int32? = nil) {
        var text = "HTTP/1.1 \(r.status) \(HTTPResponse.reason(r.status))\r\n"
        for (k, v) in r.headers { text += "\(k): \(v)\r\n" }
        if r.stream == nil { text += "Content-Length: \(r.body.count)\r\n" }
        text += "Connection: close\r\nCache-Control: no-store\r\n\r\n"
        var bytes = Array(text.utf8)
        if !head { bytes += r.body }
        guard connection.send(bytes) else { return }
        guard let stream = r.stream, !head, let fd else { return }
        // The producer writes from its own task; once this returns the socket is closed (and its
        // number may be reused), so every write and the finish go through `open`.
        nonisolated(unsafe) let connection = connection
        let open = Mutex(true)
        let stop = stream({ chunk in open.withLock { $0 && connection.send(chunk) } },
                          { open.withLock { if $0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) } } })
        waitForHangUp(fd)
        open.withLock { $0 = false }
        stop()
    }

    /// Blocks until the client closes its side (or `finish` shut the socket down): an event, no timer.
    /// A listening client sends nothing; stray bytes are read and dropped.
    static func waitForHangUp(_ fd: Int32) {
        var scratch = [UInt8](repeating: 0, count: 512)
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let n = poll(&p, 1, -1)
            if n < 0 { if errno == EINTR { continue }; return }
            if p.revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return }
            if recv(fd, &scratch, scratch.count, Int32(MSG_DONTWAIT)) <= 0 { return }
        }
    }

    /// Writes all of `bytes`; false when the peer is gone (or too slow for the send timeout).
    @discardableResult
    static func write(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }
}

/// A request refused while reading it, with the response that says why.
struct Refusal: Error {
    let response: HTTPResponse
    init(_ response: HTTPResponse) { self.response = response }
}

public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Runs `body` on a task and waits for it on the calling thread (an HTTP connection's thread, never
/// the cooperative pool), at most `timeout`; nil when it took longer. How handlers reach actors.
public func awaitBlocking<T: Sendable>(timeout: Duration = .seconds(5), _ body: @escaping @Sendable () async -> T) -> T? {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let value = await body()
        result.withLock { $0 = value }
        done.signal()
    }
    let milliseconds = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
    guard done.wait(timeout: .now() + .milliseconds(milliseconds)) == .success else { return nil }
    return result.withLock { $0 }
}
