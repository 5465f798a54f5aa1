import Foundation
import Testing
@testable import SluiceCore

@Suite("StreamUsageRequest")
struct StreamUsageRequestTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var body: String
        /// The edited body, or nil when the body must go as it is.
        var edited: String?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        .init(name: "no stream_options: a member before the closing brace",
              body: #"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}"#,
              edited: #"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}],"stream_options":{"include_usage":true}}"#),
        .init(name: "pretty-printed: whitespace before the brace is kept",
              body: "{\n  \"stream\": true\n}\n",
              edited: "{\n  \"stream\": true\n,\"stream_options\":{\"include_usage\":true}}\n"),
        .init(name: "an empty stream_options object",
              body: #"{"stream":true,"stream_options":{ }}"#,
              edited: #"{"stream":true,"stream_options":{"include_usage":true }}"#),
        .init(name: "stream_options with another member",
              body: #"{"stream_options":{"continuous_usage_stats":false},"stream":true}"#,
              edited: #"{"stream_options":{"include_usage":true,"continuous_usage_stats":false},"stream":true}"#),
        .init(name: "include_usage false becomes true",
              body: #"{"stream":true,"stream_options":{"include_usage": false}}"#,
              edited: #"{"stream":true,"stream_options":{"include_usage": true}}"#),
        .init(name: "include_usage null becomes true",
              body: #"{"stream":true,"stream_options":{"include_usage":null,"x":1}}"#,
              edited: #"{"stream":true,"stream_options":{"include_usage":true,"x":1}}"#),
        .init(name: "stream_options null becomes the object",
              body: #"{"stream":true,"stream_options":null}"#,
              edited: #"{"stream":true,"stream_options":{"include_usage":true}}"#),
        .init(name: "include_usage nested deeper is not the member",
              body: #"{"stream":true,"stream_options":{"x":{"include_usage":true}}}"#,
              edited: #"{"stream":true,"stream_options":{"include_usage":true,"x":{"include_usage":true}}}"#),
        .init(name: "stream and stream_options inside messages are not the members",
              body: #"{"messages":[{"stream":false,"stream_options":{"include_usage":true}}],"stream":true}"#,
              edited: #"{"messages":[{"stream":false,"stream_options":{"include_usage":true}}],"stream":true,"stream_options":{"include_usage":true}}"#),
        // Left as they are.
        .init(name: "the client asked for usage", body: #"{"stream":true,"stream_options":{"include_usage":true}}"#, edited: nil),
        .init(name: "not streaming", body: #"{"stream":false,"messages":[]}"#, edited: nil),
        .init(name: "no stream member", body: #"{"messages":[]}"#, edited: nil),
        .init(name: "stream is not a boolean", body: #"{"stream":"true"}"#, edited: nil),
        .init(name: "stream twice", body: #"{"stream":true,"stream":true}"#, edited: nil),
        .init(name: "stream_options twice", body: #"{"stream":true,"stream_options":{},"stream_options":{}}"#, edited: nil),
        .init(name: "include_usage twice", body: #"{"stream":true,"stream_options":{"include_usage":false,"include_usage":false}}"#,
              edited: nil),
        .init(name: "stream_options of another type", body: #"{"stream":true,"stream_options":[]}"#, edited: nil),
        .init(name: "include_usage of another type", body: #"{"stream":true,"stream_options":{"include_usage":1}}"#, edited: nil),
        .init(name: "malformed", body: #"{"stream":true,}"#, edited: nil),
        .init(name: "unfinished", body: #"{"stream":true"#, edited: nil),
        .init(name: "trailing bytes", body: #"{"stream":true} {}"#, edited: nil),
        .init(name: "an array", body: #"[{"stream":true}]"#, edited: nil),
        .init(name: "empty", body: "", edited: nil),
    ]

    @Test("edits only a streaming request that did not ask for usage", arguments: cases)
    func edits(_ testCase: Case) throws {
        let body = Array(testCase.body.utf8)
        let edit = StreamUsageRequest.edit(for: body.span)
        guard let expected = testCase.edited else {
            #expect(edit == nil)
            return
        }
        let found = try #require(edit)
        var out: [UInt8] = []
        found.apply(to: body.span, into: &out)
        #expect(String(decoding: out, as: UTF8.self) == expected)
        #expect(out.count == body.count + found.lengthChange)
        // The result is JSON that asks for usage.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        let options = try #require(object["stream_options"] as? [String: Any])
        #expect(options["include_usage"] as? Bool == true)
    }
}
