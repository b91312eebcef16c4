import EscrowCore
import Foundation

/// Configuration: named profiles, pushing them to active devices, and what the devices applied.
public enum ConfigCommands {
    public struct ProfilePut: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["profile", "put"], group: .configuration, summary: "Create or update a configuration profile",
            usage: ["profile put NAME (--settings JSON | --settings-file FILE) [--heartbeat S] [--default]"],
            options: """
                  --settings JSON       the settings, a JSON object
                  --settings-file FILE  the settings from a file
                  --heartbeat S         device heartbeat interval (seconds, or 30s, 5m)
                  --default             make this the account's default profile (used by approve --activate)
                """,
            examples: ["escrowctl profile put office --settings '{\"ntp\":\"pool.ntp.org\",\"log\":\"info\"}' --heartbeat 60 --default",
                       "escrowctl profile put lab --settings-file lab.json"],
            valued: ["settings", "settings-file", "heartbeat"], booleans: ["default"], positionals: ["NAME"])

        public var name: String
        public var settings: [String: JSONValue]?
        public var settingsFile: String?
        public var heartbeat: Int?
        public var makeDefault: Bool

        public init(_ a: Arguments) throws(UsageError) {
            name = a.positionals[0]
            guard Identifier.isValid(name) else { throw UsageError("profile name '\(name.prefix(80))' must match [A-Za-z0-9._-]{1,64}") }
            switch (a.value("settings"), a.value("settings-file")) {
            case (let s?, nil): settings = try Parse.settings(s, what: "--settings")
            case (nil, let f?): settingsFile = f
            case (nil, nil): throw UsageError("give the settings with --settings JSON or --settings-file FILE")
            default: throw UsageError("use --settings or --settings-file, not both")
            }
            heartbeat = try Parse.heartbeat(a)
            makeDefault = a.flag("default")
        }

        public func run(_ c: CommandContext) async throws {
            var settings = self.settings ?? [:]
            if let f = settingsFile {
                guard let text = try? String(contentsOfFile: f, encoding: .utf8) else {
                    throw CLIError(.notFound, "not_found", "cannot read settings file \(f)", hint: "Check the path given to --settings-file.")
                }
                do { settings = try Parse.settings(text, what: "settings file \(f)") } catch { throw CLIError(.dataError, "invalid_argument", error.message) }
            }
            let json = try await c.call(.profilePut, Commands.ProfilePut(name: name, settings: settings, heartbeatInterval: heartbeat, makeDefault: makeDefault ? true : nil))
            if c.global.json { return c.console.json(json) }
            let p = try c.decode(json, as: Commands.Profile.self, .profilePut)
            c.console.out("profile \(p.name) v\(p.version) saved in account \(c.account)" + (p.isDefault ? " (default)" : "")
                          + "; push it with 'escrowctl config push --all --profile \(p.name)'")
        }
    }

    public struct ProfileList: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["profile", "list"], group: .configuration, summary: "List configuration profiles",
            usage: ["profile list"], options: "",
            examples: ["escrowctl profile list", "escrowctl --account cust profile list --json"],
            valued: [], booleans: [])

        public init(_ a: Arguments) throws(UsageError) {}

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.profileList, [String: String]())
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.ProfileListResult.self, .profileList)
            c.console.out(Table(["NAME", "VERSION", "HEARTBEAT", "DEFAULT", "SETTINGS"], r.profiles.map {
                let s = Console.compactJSON(.object($0.settings))
                return [$0.name, "v\($0.version)", "\($0.heartbeatInterval)s", $0.isDefault ? "yes" : "", s.count > 60 ? String(s.prefix(57)) + "..." : s]
            }).render())
        }
    }

    public struct ProfileShow: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["profile", "show"], group: .configuration, summary: "Show a profile and how many devices use it, per version",
            usage: ["profile show NAME"], options: "",
            examples: ["escrowctl profile show office", "escrowctl --account cust profile show lab --json"],
            valued: [], booleans: [], positionals: ["NAME"])
        public var args: Commands.ProfileRef
        public init(_ a: Arguments) throws(UsageError) { args = try .positional(a) }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.profileShow, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.ProfileShowResult.self, .profileShow)
            let p = r.profile
            c.console.out(Table([], [
                ["profile", p.name + (p.isDefault ? " (default)" : "")], ["version", "v\(p.version)"], ["heartbeat", "\(p.heartbeatInterval)s"],
                ["settings", Console.compactJSON(.object(p.settings))],
                ["devices", r.versions.isEmpty ? "0" : "\(r.devices) (" + r.versions.map { "v\($0.version): \($0.devices)" }.joined(separator: ", ") + ")"],
            ]).render())
        }
    }

    public struct ProfileDelete: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["profile", "delete"], group: .configuration, summary: "Delete a profile no device uses",
            usage: ["profile delete NAME"],
            options: """
                  NAME            the profile; refused while any device's desired configuration comes from it
                                  (push another profile to those devices first)
                """,
            examples: ["escrowctl profile delete lab", "escrowctl --account cust profile delete old-eu"],
            valued: [], booleans: [], positionals: ["NAME"])
        public var args: Commands.ProfileRef
        public init(_ a: Arguments) throws(UsageError) { args = try .positional(a) }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.profileDelete, args)
            if c.global.json { return c.console.json(json) }
            let p = try c.decode(json, as: Commands.Profile.self, .profileDelete)
            c.console.out("profile \(p.name) v\(p.version) deleted from account \(c.account)"
                          + (p.isDefault ? "; the account now uses the built-in default profile" : ""))
        }
    }

    public struct Push: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["config", "push"], group: .configuration, summary: "Push a configuration to active devices",
            usage: ["config push (--ids a,b | --all) [--profile P | --settings JSON] [--heartbeat S]"],
            options: """
                  --ids a,b        these devices; or --all for every active device of the account
                  --profile P      push this profile (default: the account's default profile)
                  --settings JSON  or push these settings
                  --heartbeat S    heartbeat interval (seconds, or 30s, 5m)
                """,
            examples: ["escrowctl config push --all --profile office", "escrowctl config push --ids gw-1 --settings '{\"log\":\"debug\"}' --heartbeat 30"],
            valued: ["ids", "profile", "settings", "heartbeat"], booleans: ["all"])

        public var args: Commands.ConfigPush

        public init(_ a: Arguments) throws(UsageError) {
            let ids = a.value("ids") == nil ? nil : try Parse.devices(a.list("ids"))
            guard (ids != nil) != a.flag("all") else { throw UsageError("name the devices with --ids a,b or --all (one of them)") }
            if a.value("profile") != nil, a.value("settings") != nil { throw UsageError("use --profile or --settings, not both") }
            let settings = try a.value("settings").map { s throws(UsageError) in try Parse.settings(s, what: "--settings") }
            args = .init(deviceIds: ids, all: a.flag("all") ? true : nil, profile: a.value("profile"), settings: settings, heartbeatInterval: try Parse.heartbeat(a))
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.configPush, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.ConfigPushResult.self, .configPush)
            c.console.out("configuration pushed to \(plural(r.pushed.count, "device")); follow with 'escrowctl config status' or 'escrowctl tail --type config.applied,config.rejected'")
            if !r.pushed.isEmpty && r.pushed.count <= 50 { c.console.out(Status.table(r.pushed).render()) }
            RefusalList.print(r.refused, c)
            if r.pushed.isEmpty, let first = r.refused.first { throw CLIError(.conflict, "conflict", "no device was configured (\(first.reason))") }
        }
    }

    public struct Status: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["config", "status"], group: .configuration, summary: "Show desired vs applied configuration per device",
            usage: ["config status [--ids a,b]"],
            options: "  --ids a,b   only these devices (default: all of the account's devices)",
            examples: ["escrowctl config status", "escrowctl config status --ids gw-1,gw-2 --json"],
            valued: ["ids"], booleans: [])

        public var args: Commands.ConfigStatus

        public init(_ a: Arguments) throws(UsageError) {
            args = .init(deviceIds: a.value("ids") == nil ? nil : try Parse.devices(a.list("ids")))
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.configStatus, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.ConfigStatusResult.self, .configStatus)
            if !r.devices.isEmpty { c.console.out(Self.table(r.devices).render()) }
            var counts: [String: Int] = [:]
            for d in r.devices { counts[d.state.rawValue, default: 0] += 1 }
            c.console.note("\(plural(r.devices.count, "device")): \(Format.counts(counts))")
        }

        public static func table(_ entries: [Commands.ConfigStatusEntry]) -> Table {
            Table(["DEVICE", "DESIRED", "APPLIED", "STATE", "REASON"], entries.map {
                [$0.deviceId.rawValue, "v\($0.desiredVersion)", "v\($0.appliedVersion)", $0.state.rawValue, $0.reason ?? ""]
            })
        }
    }
}

extension Commands.ProfileRef {
    /// The NAME positional of `profile show` / `profile delete`, checked like every identifier.
    static func positional(_ a: Arguments) throws(UsageError) -> Commands.ProfileRef {
        let name = a.positionals[0]
        guard Identifier.isValid(name) else { throw UsageError("profile name '\(name.prefix(80))' must match [A-Za-z0-9._-]{1,64}") }
        return .init(name: name)
    }
}
