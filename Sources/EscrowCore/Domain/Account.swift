/// An account: a provisioner (OEM or factory), a reseller, or a customer.
public struct Account: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable { case provisioner, reseller, customer }
    public var id: AccountID
    public var name: String
    public var kind: Kind
    /// The account whose operators may act in this one (an OEM managing its customer).
    /// `nil` means standalone: it shares nothing with anyone.
    public var managedBy: AccountID?
    public init(id: AccountID, name: String, kind: Kind, managedBy: AccountID? = nil) {
        self.id = id; self.name = name; self.kind = kind; self.managedBy = managedBy
    }
    public var isStandalone: Bool { managedBy == nil }
}

/// Who may act where. The broker enforces the same rule through generated ACLs
/// (`AccessPolicy.accounts(reachableBy:)`), so the control plane and the broker agree.
public enum AccessPolicy {
    /// The accounts whose command and event topics an operator of `home` may use:
    /// its own, plus those it manages. Never a standalone account of someone else.
    public static func accounts(reachableBy home: AccountID, in all: [Account]) -> [AccountID] {
        [home] + all.filter { $0.managedBy == home }.map(\.id).sorted()
    }

    public static func mayAct(operatorOf home: AccountID, in target: Account) -> Bool {
        home == target.id || target.managedBy == home
    }
}
