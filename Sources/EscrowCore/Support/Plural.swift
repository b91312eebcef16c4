/// "1 device", "12 devices": counts in messages people read (CLI output, command errors).
public func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
