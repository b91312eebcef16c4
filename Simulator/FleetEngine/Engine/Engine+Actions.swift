import MQTTWire
import Glibc
import Identity

/// What a behaviour asks for (publish, subscribe, schedule), and the timers.
extension Engine {
    // MARK: Actions and timers

    func execute(_ actions: [DeviceAction], device d: Int, now: UInt64) {
        for action in actions {
            switch action {
            case .publish(let topic, let payload, let qos, let retain):
                guard slots[d].state == .connected else { metrics.droppedWhileOffline += 1; continue }
                var id: UInt16?
                if qos != .atMostOnce {
                    id = nextPacketID(d)
                    slots[d].inflight.append(InFlight(packetID: id!, sentAt: now))
                    metrics.publishedQoS1 += 1
                }
                metrics.published += 1
                send(.publish(.init(topic: topic, payload: payload, qos: qos, retain: retain, packetID: id)), device: d, now: now)
            case .subscribe(let filter, let qos):
                guard slots[d].state == .connected else { continue }
                send(.subscribe(.init(packetID: nextPacketID(d), filters: [(filter, qos)])), device: d, now: now)
            case .schedule(let token, let after):
                guard slots[d].state == .connected else { continue }
                addTimer(d, .behavior, token: token, after: after, now: now)
            case .disconnect:
                guard slots[d].fd >= 0 else { continue }
                closeConnection(d, now: now, graceful: true)
                if configuration.reconnect { scheduleReconnect(d, now: now) } else { slots[d].state = .stopped }
            case .measure(let kind, let seconds):
                metrics.record(kind, micros: UInt64(max(0, seconds) * 1e6))
            case .note(let n):
                switch n {
                case .configApplied: metrics.configsApplied += 1
                case .configIgnored: metrics.configsIgnored += 1
                case .configRejected: metrics.configsRejected += 1
                case .heartbeat: metrics.heartbeats += 1
                }
            }
        }
    }

    func nextPacketID(_ d: Int) -> UInt16 {
        let id = slots[d].nextPacketID
        slots[d].nextPacketID = id == .max ? 1 : id + 1
        return id
    }

    func addTimer(_ d: Int, _ kind: TimerKind, token: UInt8 = 0, after: Double, now: UInt64) {
        timers.push(.init(deadline: now + UInt64(max(0, after) * 1e9), slot: Int32(d), generation: slots[d].generation, kind: kind, token: token))
    }

    func fireTimers(_ now: UInt64) {
        while let t = timers.popDue(now) {
            let d = Int(t.slot)
            guard slots[d].generation == t.generation else { continue }
            switch t.kind {
            case .connectTimeout:
                if slots[d].state == .connecting || slots[d].state == .awaitingConnAck {
                    fail(d, cause: .timeout, detail: "no CONNACK within \(configuration.connectTimeout) s", now: now)
                }
            case .keepAlive:
                guard slots[d].state == .connected else { continue }
                if slots[d].pingOutstanding {
                    fail(d, cause: .timeout, detail: "no PINGRESP within keepalive", now: now); continue
                }
                let ka = UInt64(configuration.keepAlive) * 1_000_000_000
                if now &- slots[d].lastSend >= ka * 3 / 4 {
                    slots[d].pingOutstanding = true
                    send(.pingreq, device: d, now: now)
                }
                addTimer(d, .keepAlive, after: Double(configuration.keepAlive) * 0.75, now: now)
            case .reconnect:
                if slots[d].state == .backoff { enqueue(d) }
            case .behavior:
                guard slots[d].state == .connected else { continue }
                execute(behaviors[d].onTimer(t.token, now: seconds(now)), device: d, now: now)
            }
        }
    }
}
