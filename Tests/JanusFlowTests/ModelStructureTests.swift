import Foundation
import JanusFlow
import MLXEngine
import XCTest

final class ModelStructureTests: XCTestCase {
    func manifest(_ name: String) throws -> (config: Data, params: [String: [Int]], dtypes: Set<String>) {
        let url = fixtures.appendingPathComponent("manifests/\(name).json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let config = try JSONSerialization.data(withJSONObject: json["config"]!)
        var params: [String: [Int]] = [:]
        var dtypes = Set<String>()
        for p in json["parameters"] as! [[String: Any]] {
            params[p["name"] as! String] = p["shape"] as? [Int]
            dtypes.insert(p["dtype"] as! String)
        }
        return (config, params, dtypes)
    }

    /// The full JanusFlow-1.3B tree, built from the published config without allocating its 2B weights,
    /// has exactly the checkpoint's names and shapes.
    func testFullSizeModelMatchesTheCheckpointManifest() throws {
        let m = try manifest("janusflow-1.3b")
        let config = try decodeConfig(JanusFlowConfig.self, from: m.config, name: "manifest config")
        XCTAssertEqual(config, JanusFlowConfig.janusFlow1_3B)
        Memory.resetPeak()
        let model = JanusFlowModel(config)
        let params = model.parameters()
        XCTAssertEqual(Set(params.keys), Set(m.params.keys),
                       "missing: \(Set(m.params.keys).subtracting(params.keys).sorted().prefix(5)) extra: \(Set(params.keys).subtracting(m.params.keys).sorted().prefix(5))")
        for (name, shape) in m.params { XCTAssertEqual(params[name]?.shape, shape, name) }
        XCTAssertEqual(model.parameterCount, 2_046_367_504)
        XCTAssertLessThan(Memory.active, 64 << 20, "building the tree must not allocate the weights")
    }

    func testTinyConfigDecodesWithExplicitGeometry() throws {
        let config = try JanusFlowConfig.load(tinyFixture.appendingPathComponent("model/config.json"))
        XCTAssertEqual(config.siglip.width, 64)
        XCTAssertEqual(config.siglip.builtLayers, 2)
        XCTAssertEqual(config.genEncoder.channels, 32)
        XCTAssertEqual(config.genDecoder.upsamples, 1)
        XCTAssertEqual(config.languageConfig.headDim, 16)
    }
}

final class LoadingErrorTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("load-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: tinyFixture.appendingPathComponent("model/config.json"), to: dir.appendingPathComponent("config.json"))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func weights() throws -> [String: Tensor] {
        try Safetensors.load(tinyFixture.appendingPathComponent("model/model.safetensors")).tensors
    }

    func write(_ w: [String: Tensor]) throws { try Safetensors.save(w, to: dir.appendingPathComponent("model.safetensors")) }

    func loadError() -> String {
        do {
            _ = try JanusFlowModel.load(directory: dir)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    func testMissingTensor() throws {
        var w = try weights()
        w["language_model.model.norm.weight"] = nil
        try write(w)
        XCTAssertEqual(loadError(), "\(dir.path): weights do not match the model: missing 1 tensor(s): language_model.model.norm.weight")
    }

    func testExtraTensor() throws {
        var w = try weights()
        w["language_model.model.layers.9.mlp.up_proj.weight"] = Tensor.ones([2, 2])
        try write(w)
        XCTAssertEqual(loadError(), "\(dir.path): weights do not match the model: unexpected 1 tensor(s): language_model.model.layers.9.mlp.up_proj.weight")
    }

    func testWrongShape() throws {
        var w = try weights()
        w["vision_gen_enc_aligner.bias"] = Tensor.zeros([65])
        try write(w)
        XCTAssertEqual(loadError(), "\(dir.path): weights do not match the model: wrong shape or dtype for 1 tensor(s): vision_gen_enc_aligner.bias: expected [64], found [65]")
    }

    func testWrongDType() throws {
        var w = try weights()
        w["beg_of_und_embed"] = Tensor.zeros([1, 64], dtype: .int32)
        try write(w)
        XCTAssertEqual(loadError(), "\(dir.path): weights do not match the model: wrong shape or dtype for 1 tensor(s): beg_of_und_embed: expected a floating-point dtype, found int32")
    }

    func testTruncatedFile() throws {
        let source = try Data(contentsOf: tinyFixture.appendingPathComponent("model/model.safetensors"))
        try source.prefix(source.count / 2).write(to: dir.appendingPathComponent("model.safetensors"))
        let message = loadError()
        XCTAssertTrue(message.hasPrefix("\(dir.path)/model.safetensors: truncated file: tensor '"), message)
    }

    func testMissingWeightsFile() {
        XCTAssertEqual(loadError(), "\(dir.path): no model.safetensors (or model-*.safetensors shards) in the model folder")
    }

    func testConfigWithMissingField() throws {
        try write(try weights())
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var language = json["language_config"] as! [String: Any]
        language["hidden_size"] = nil
        json["language_config"] = language
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertEqual(loadError(), "\(url.path): missing field 'language_config.hidden_size'")
    }

    /// Values that would divide by zero or build nothing (the fuzzer's first find: zero attention heads) are
    /// refused by their dotted field, before any layer is built.
    func testConfigWithImpossibleSizes() throws {
        let url = dir.appendingPathComponent("config.json")
        let original = try Data(contentsOf: url)
        func error(_ section: String, _ key: String, _ value: Any, params: Bool = false) throws -> String? {
            var json = try JSONSerialization.jsonObject(with: original) as! [String: Any]
            var part = json[section] as! [String: Any]
            if params {
                var inner = part["params"] as! [String: Any]
                inner[key] = value
                part["params"] = inner
            } else {
                part[key] = value
            }
            json[section] = part
            let data = try JSONSerialization.data(withJSONObject: json)
            do {
                _ = try decodeConfig(JanusFlowConfig.self, from: data, name: "config.json")
                return nil
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(try error("language_config", "num_attention_heads", 0),
                       "config.json: field 'language_config.num_attention_heads': must be from 1 to 16777216 (got 0)")
        XCTAssertEqual(try error("language_config", "num_key_value_heads", 3),
                       "config.json: field 'language_config.num_key_value_heads': num_attention_heads 4 is not a multiple of num_key_value_heads 3")
        XCTAssertEqual(try error("language_config", "rms_norm_eps", -1),
                       "config.json: field 'language_config.rms_norm_eps': must be a finite number above 0 (got -1.0)")
        XCTAssertEqual(try error("vision_gen_enc_config", "block_out_channels", [Int](), params: true),
                       "config.json: field 'vision_gen_enc_config.params.block_out_channels': must be a non-empty list of sizes from 1 to 16777216 (got [])")
        XCTAssertEqual(try error("vision_gen_dec_config", "upsamples", 99, params: true),
                       "config.json: field 'vision_gen_dec_config.params.upsamples': must be from 0 to 16 (got 99)")
    }

    func testUnknownComponentClass() throws {
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var enc = json["vision_gen_enc_config"] as! [String: Any]
        enc["cls"] = "SomethingElse"
        json["vision_gen_enc_config"] = enc
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        XCTAssertEqual(loadError(), "\(url.path): field 'vision_gen_enc_config': unsupported cls 'SomethingElse' (expected 'ShallowUViTEncoder')")
    }

    func testShardedCheckpointWithIndex() throws {
        let w = try weights()
        let names = w.keys.sorted()
        let half = names.count / 2
        try Safetensors.save(w.filter { names.prefix(half).contains($0.key) }, to: dir.appendingPathComponent("model-00001-of-00002.safetensors"))
        try Safetensors.save(w.filter { names.dropFirst(half).contains($0.key) }, to: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        var map: [String: String] = [:]
        for (i, n) in names.enumerated() { map[n] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors" }
        try JSONSerialization.data(withJSONObject: ["weight_map": map]).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        let model = try JanusFlowModel.load(directory: dir)
        XCTAssertEqual(try model.beginOfUnderstandingEmbed.values(Float.self), try w["beg_of_und_embed"]!.values(Float.self))
    }
}
