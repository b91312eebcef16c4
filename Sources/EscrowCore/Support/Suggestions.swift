/// "Did you mean": the one place every executable finds the known words closest to a mistyped one.
public enum Suggestions {
    /// Known words within two edits of `word` (a typo, a swapped pair), or sharing its first three
    /// letters; the closest first.
    public static func closest(to word: String, in known: [String], limit: Int = 3) -> [String] {
        let w = Array(word.lowercased())
        let scored = known.compactMap { k -> (String, Int)? in
            let d = distance(w, Array(k.lowercased()))
            if d <= 2 || (w.count >= 3 && k.lowercased().hasPrefix(String(w.prefix(3)))) { return (k, d) }
            return nil
        }
        return scored.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(limit).map(\.0)
    }

    /// `; did you mean a, b?` or "" when nothing is close.
    public static func phrase(_ word: String, in known: [String], prefix: String = "") -> String {
        let close = closest(to: word, in: known)
        return close.isEmpty ? "" : "; did you mean " + close.map { prefix + $0 }.joined(separator: ", ") + "?"
    }

    /// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[a.count][b.count]
    }
}
