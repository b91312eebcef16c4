import Foundation
import Synchronization
import MQTT

/// Polls `condition` (every `interval`) until it holds, or throws naming `what` after `timeout`.
/// Polling inside a bounded wait is fine; a bare sleep as synchronisation is not.
public func waitUntil(
    timeout: Duration = .seconds(10),
    _ what: String,
    interval: Duration = .milliseconds(20),
    condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if try await condition() { return }
        if clock.now >= deadline {
            throw TestSupportError("timed out after \(timeout) waiting until \(what)")
        }
        try await Task.sleep(for: interval)
    }
}

/// The first element of `stream` matching `predicate`, or an error naming `what` after `timeout`.
/// Non-matching elements are consumed and dropped. Only one task may iterate a stream at a time.
public func firstElement<Element: Sendable>(
    of stream: AsyncStream<Element>,
    timeout: Duration = .seconds(10),
    _ what: String = "a matching element",
    where predicate: @escaping @Sendable (Element) -> Bool = { _ in true }
) async throws -> Element {
    try await withThrowingTaskGroup(of: Element?.self) { group in
        group.addTask {
            for await element in stream where predicate(element) { return element }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TestSupportError("timed out after \(timeout) waiting for \(what)")
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else {
            throw TestSupportError("stream finished while waiting for \(what)")
        }
        guard let element = first else {
            throw TestSupportError("stream finished while waiting for \(what)")
        }
        return element
    }
}

/// The first `count` elements of `stream` matching `predicate`, or an error naming `what` (and how many
/// arrived) after `timeout`.
public func collect<Element: Sendable>(
    _ count: Int,
    from stream: AsyncStream<Element>,
    timeout: Duration = .seconds(10),
    _ what: String = "elements",
    where predicate: @escaping @Sendable (Element) -> Bool = { _ in true }
) async throws -> [Element] {
    let progress = Progress()
    return try await withThrowingTaskGroup(of: [Element]?.self) { group in
        group.addTask {
            var found: [Element] = []
            for await element in stream where predicate(element) {
                found.append(element)
                progress.count.store(found.count, ordering: .relaxed)
                if found.count == count { return found }
            }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TestSupportError("timed out after \(timeout) waiting for \(count) \(what); got \(progress.count.load(ordering: .relaxed))")
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let elements = first else {
            throw TestSupportError("stream finished after \(progress.count.load(ordering: .relaxed)) of \(count) \(what)")
        }
        return elements
    }
}

private final class Progress: Sendable {
    let count = Atomic<Int>(0)
}

/// True when the broker gives the device client no rights: the connection is refused (TLS or
/// CONNACK), or it connects but its subscription to its own `devices/{id}/config` is refused
/// (the broker plugin's revocation set allows the handshake, then denies every access and kicks
/// the session). The client is disconnected afterwards.
public func brokerRefuses(_ device: MQTTClient) async -> Bool {
    do { try await device.connect(timeout: .seconds(5)) } catch { return true }
    let refused: Bool
    do {
        let codes = try await device.subscribe([("devices/\(device.options.clientID)/config", .atLeastOnce)])
        refused = codes.allSatisfy { $0 >= 0x80 }
    } catch {
        refused = true // disconnected before the SUBACK
    }
    await device.disconnect()
    return refused
}
