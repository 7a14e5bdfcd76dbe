import Foundation
import FuzzSupport
import JanusFlowDemo

/// Any bytes as the demo's `--settings` file.
@main
struct FuzzDemoSettings {
    static func main() {
        let defaults = ShapesDemo.Settings()
        FuzzTarget.run { data in
            do {
                _ = try defaults.overridden(byJSON: data, name: "settings.json")
            } catch is ShapesDemoError {
            } catch {
                fatalError("overridden(byJSON:) threw \(type(of: error)), not ShapesDemoError: \(error)")
            }
        }
    }
}
