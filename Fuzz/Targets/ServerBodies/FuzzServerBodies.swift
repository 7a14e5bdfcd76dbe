import Foundation
import FuzzSupport
import JanusFlowServer

/// Any bytes as the body of one of the server's POST endpoints (the first byte picks which: native understand and
/// generate, OpenAI chat completions and image generations), parsed and checked as the server does.
@main
struct FuzzServerBodies {
    static func main() {
        let configuration = ServerConfiguration()
        FuzzTarget.run { data in
            guard let first = data.first else { return }
            let endpoint = RequestBodies.Endpoint.allCases[Int(first) % RequestBodies.Endpoint.allCases.count]
            do {
                try RequestBodies.check(data.dropFirst(), for: endpoint, configuration: configuration, imageSize: 384)
            } catch let error as APIError {
                precondition((400..<500).contains(error.status), "\(endpoint.rawValue) refused with \(error.status): \(error)")
            } catch {
                fatalError("\(endpoint.rawValue) threw \(type(of: error)), not APIError: \(error)")
            }
        }
    }
}
