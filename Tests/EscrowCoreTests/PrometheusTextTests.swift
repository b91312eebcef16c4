import Testing
import EscrowCore

@Suite("Prometheus text format: written and checked in one place")
struct PrometheusTextTests {
    @Test("what render writes validates, labels escaped, histogram buckets cumulative with +Inf == _count")
    func roundTrip() throws {
        var h = PrometheusText.Histogram(bounds: [0.01, 0.1, 1])
        for v in [0.005, 0.05, 0.05, 0.5, 3] { h.observe(v) }
        var f = PrometheusText.Family("x_duration_seconds", .histogram, "A duration.\nSecond line")
        f.histograms = [([("command", "a\"b\\c\nd")], h)]
        let text = PrometheusText.render([PrometheusText.Family("x_total", .counter, "Things.", samples: [.init([("k", "v")], 3)]), f])
        let samples = try PrometheusText.validate(text)
        #expect(text.contains("x_duration_seconds_bucket{command=\"a\\\"b\\\\c\\nd\",le=\"0.1\"} 3\n"), "\(text)")
        #expect(text.contains("x_duration_seconds_bucket{command=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 5\n"))
        #expect(text.contains("# HELP x_duration_seconds A duration.\\nSecond line\n"))
        #expect(samples.first { $0.name == "x_duration_seconds_count" }?.value == 5)
        #expect(samples.first { $0.name == "x_duration_seconds_bucket" }?.labels["command"] == "a\"b\\c\nd")
        #expect(samples.first { $0.name == "x_total" }?.value == 3)
    }

    @Test("the validator refuses what a scraper would", arguments: [
        "1bad 3\n",                                              // metric name
        "x{1k=\"v\"} 3\n",                                       // label name
        "x{k=\"v} 3\n",                                          // unterminated value
        "x{k=\"\\q\"} 3\n",                                      // bad escape
        "x 3 notatime\n",                                        // timestamp
        "x three\n",                                             // value
        "x 1\n# TYPE x counter\n",                               // TYPE after samples
        "# TYPE x counter\n# TYPE x gauge\n",                    // two TYPEs
        "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 4\nh_bucket{le=\"+Inf\"} 5\nh_count 5\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_count 5\n",  // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 5\nh_count 6\n", // +Inf != count
        "x 1",                                                   // no final newline
    ])
    func refusals(_ text: String) {
        #expect(throws: PrometheusText.ValidationError.self) { try PrometheusText.validate(text) }
    }
}
