import Foundation
import JanusFlow
import MLXEngine
import XCTest

// SDXL-VAE (diffusers AutoencoderKL): parity with diffusers 0.31.0 on the tiny fixture, the published names and
// shapes of the full SDXL-VAE, legacy attention names, and the loader's error messages.

private enum VAEFixtures {
    static var root: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)! }
    static var tinyVAE: URL { root.appendingPathComponent("tiny/vae") }
    static var weightsFile: URL { tinyVAE.appendingPathComponent("diffusion_pytorch_model.safetensors") }
    static var io: [String: Tensor] {
        get throws { try Safetensors.load(root.appendingPathComponent("tiny/io.safetensors")).tensors }
    }

    static func temporaryFolder() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vae-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// |x - ref| <= atol + rtol * |ref| elementwise; the message gives the largest absolute error.
private func assertClose(_ name: String, _ x: Tensor, _ ref: Tensor, atol: Float = 1e-3, rtol: Float = 1e-3,
                         file: StaticString = #filePath, line: UInt = #line) throws {
    XCTAssertEqual(x.shape, ref.shape, "\(name): shape", file: file, line: line)
    guard x.shape == ref.shape else { return }
    let a = try x.asType(.float32).values(Float.self)
    let b = try ref.asType(.float32).values(Float.self)
    var maxError: Float = 0
    var violations = 0
    for (u, v) in zip(a, b) {
        let e = abs(u - v)
        if !(e <= atol + rtol * abs(v)) { violations += 1 }
        if e > maxError || e.isNaN { maxError = e }
    }
    print("[VAETests] \(name): max abs error \(maxError) over \(a.count) values")
    XCTAssertEqual(violations, 0, "\(name): \(violations) of \(a.count) values outside \(atol) + \(rtol)*|ref|; max abs error \(maxError)",
                   file: file, line: line)
}

/// Today's attention names -> the ones older diffusers wrote (`query/key/value/proj_attn`, 1x1-conv weights).
private func legacyNames(_ weights: [String: Tensor]) -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for (name, t) in weights {
        var n = name
        for (new, old) in [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")] {
            n = n.replacingOccurrences(of: new, with: old)
        }
        out[n] = n != name && n.hasSuffix(".weight") ? t.reshaped(t.shape + [1, 1]) : t
    }
    return out
}

final class VAETests: XCTestCase {
    // MARK: parity with diffusers

    func testDecodeMatchesDiffusers() throws {
        let io = try VAEFixtures.io
        let vae = try AutoencoderKL.load(directory: VAEFixtures.tinyVAE)
        let z = try XCTUnwrap(io["vae.decode_in"])
        XCTAssertEqual(z.shape, [2, 4, 8, 8])
        try assertClose("vae.decoded", vae.decode(z), XCTUnwrap(io["vae.decoded"]))
        // Evaluating block by block (the default, to bound memory) computes exactly what one lazy graph does.
        XCTAssertTrue(vae.decoder.evaluatesBlockByBlock)
        let stepwise = try vae.decode(z).values(Float.self)
        vae.decoder.evaluatesBlockByBlock = false
        XCTAssertEqual(try vae.decode(z).values(Float.self), stepwise)
    }

    func testBFloat16WeightsDecodeCloseToDiffusers() throws {
        // bf16 weights (what the official code casts the VAE to): the convolutions take the bf16 products of the CPU
        // path, float32 activations between them. The tiny fixture's float32 output stays within bf16's rounding.
        let io = try VAEFixtures.io
        let vae = try AutoencoderKL.load(directory: VAEFixtures.tinyVAE, dtype: .bfloat16)
        let z = try XCTUnwrap(io["vae.decode_in"])
        try assertClose("vae.decoded, bf16 weights", vae.decode(z), XCTUnwrap(io["vae.decoded"]), atol: 3e-2, rtol: 3e-2)
    }

    func testBlockByBlockDecodingKeepsGradients() throws {
        // The demo trains the decoder: evaluating inside the gradient trace must not cut the graph.
        let vae = try AutoencoderKL.load(directory: VAEFixtures.tinyVAE)
        let z = try XCTUnwrap(VAEFixtures.io["vae.decode_in"])
        func gradients(blockByBlock: Bool) throws -> [String: [Float]] {
            vae.decoder.evaluatesBlockByBlock = blockByBlock
            let grads = try Autograd.valueAndGrad(model: vae) { [vae.decode(z).square().mean()] }.grads
            return try grads.mapValues { try $0.values(Float.self) }
        }
        let lazy = try gradients(blockByBlock: false), stepwise = try gradients(blockByBlock: true)
        XCTAssertEqual(Set(stepwise.keys), Set(lazy.keys))
        XCTAssertTrue(stepwise.keys.contains { $0.hasPrefix("decoder.up_blocks.0.resnets.0.") }, "\(stepwise.keys.sorted())")
        for (name, g) in lazy {
            if name.hasPrefix("decoder.") { XCTAssertGreaterThan(g.map(abs).max() ?? 0, 0, name) }
            XCTAssertEqual(stepwise[name]!, g, name)
        }
    }

    func testEncodeMatchesDiffusers() throws {
        let io = try VAEFixtures.io
        let vae = try AutoencoderKL.load(directory: VAEFixtures.tinyVAE)
        let x = try XCTUnwrap(io["vae.encode_in"])
        XCTAssertEqual(x.shape, [2, 3, 16, 16])
        let (mean, logvar) = vae.encode(x)
        try assertClose("vae.latent_mean", mean, XCTUnwrap(io["vae.latent_mean"]))
        try assertClose("vae.latent_logvar", logvar, XCTUnwrap(io["vae.latent_logvar"]))
        try assertClose("vae.latent_std", (logvar * 0.5).exp(), XCTUnwrap(io["vae.latent_std"]))
    }

    func testLogvarIsClamped() throws {
        let vae = try AutoencoderKL.load(directory: VAEFixtures.tinyVAE)
        // Push the log-variance far out of range by scaling quant_conv's log-variance rows.
        var weights = vae.parameters()
        let w = try XCTUnwrap(weights["quant_conv.weight"])
        weights["quant_conv.weight"] = w * 1e4
        try vae.load(weights: weights)
        let (_, logvar) = vae.encode(try XCTUnwrap(VAEFixtures.io["vae.encode_in"]))
        let v = try logvar.values(Float.self)
        XCTAssertGreaterThanOrEqual(v.min()!, -30)
        XCTAssertLessThanOrEqual(v.max()!, 20)
        XCTAssertTrue(v.contains(-30) || v.contains(20))
    }

    // MARK: structure

    func testTinyConfigDecodes() throws {
        let config = try decodeConfig(VAEConfig.self, from: VAEFixtures.tinyVAE.appendingPathComponent("config.json"))
        XCTAssertEqual(config.blockOutChannels, [16, 32])
        XCTAssertEqual(config.layersPerBlock, 1)
        XCTAssertEqual(config.normNumGroups, 8)
        XCTAssertEqual(config.latentChannels, 4)
        XCTAssertEqual(config.scalingFactor, 0.13025)
        XCTAssertEqual(config.sampleSize, 16)
        XCTAssertNil(config.shiftFactor)
        XCTAssertTrue(config.forceUpcast && config.midBlockAddAttention && config.useQuantConv && config.usePostQuantConv)
        XCTAssertEqual(config.downBlockTypes, ["DownEncoderBlock2D", "DownEncoderBlock2D"])
        XCTAssertEqual(config.upBlockTypes, ["UpDecoderBlock2D", "UpDecoderBlock2D"])
        XCTAssertEqual(config.downsamplingFactor, 2)
    }

    func testSDXLVAENamesAndShapesEqualTheManifest() throws {
        let url = VAEFixtures.root.appendingPathComponent("manifests/sdxl-vae.json")
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let manifestConfig = try decodeConfig(VAEConfig.self, from: JSONSerialization.data(withJSONObject: json["config"]!),
                                              name: "sdxl-vae.json")
        XCTAssertEqual(manifestConfig, VAEConfig.sdxl)
        XCTAssertEqual(VAEConfig.sdxl.downsamplingFactor, 8)

        var expected: [String: [Int]] = [:]
        for p in try XCTUnwrap(json["parameters"] as? [[String: Any]]) {
            expected[try XCTUnwrap(p["name"] as? String)] = try XCTUnwrap(p["shape"] as? [Int])
        }
        XCTAssertEqual(expected.count, 248)
        // Lazy initialisers: nothing is allocated here.
        let params = AutoencoderKL(config: .sdxl).parameters()
        let ours = Set(params.keys), theirs = Set(expected.keys)
        XCTAssertEqual(ours, theirs, "missing: \(theirs.subtracting(ours).sorted()) unexpected: \(ours.subtracting(theirs).sorted())")
        for (name, shape) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(params[name]?.shape, shape, name)
        }
        XCTAssertEqual(params.values.reduce(0) { $0 + $1.size }, try XCTUnwrap(json["total_parameters"] as? Int))
    }

    func testConfigRoundTripsThroughJSON() throws {
        let data = try JSONEncoder().encode(VAEConfig.sdxl)
        XCTAssertEqual(try decodeConfig(VAEConfig.self, from: data, name: "config.json"), .sdxl)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(object["_class_name"] as? String, "AutoencoderKL")
        XCTAssertEqual(object["act_fn"] as? String, "silu")
        XCTAssertEqual(object["block_out_channels"] as? [Int], [128, 256, 512, 512])
    }

    // MARK: legacy names

    func testRemapLegacyNames() throws {
        let modern = try Safetensors.load(VAEFixtures.weightsFile).tensors
        let legacy = legacyNames(modern)
        XCTAssertNotNil(legacy["encoder.mid_block.attentions.0.query.weight"])
        XCTAssertEqual(legacy["decoder.mid_block.attentions.0.proj_attn.weight"]?.shape, [32, 32, 1, 1])
        let remapped = AutoencoderKL.remapLegacyNames(legacy)
        XCTAssertEqual(Set(remapped.keys), Set(modern.keys))
        for (name, t) in modern { XCTAssertEqual(remapped[name]?.shape, t.shape, name) }
        // Names that already are modern pass through unchanged (group_norm, resnets, ...).
        XCTAssertEqual(Set(AutoencoderKL.remapLegacyNames(modern).keys), Set(modern.keys))
    }

    func testLegacyCheckpointLoadsAndGivesTheSameOutputs() throws {
        let dir = try VAEFixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: VAEFixtures.tinyVAE.appendingPathComponent("config.json"),
                                         to: dir.appendingPathComponent("config.json"))
        // Legacy files also tend to be called model.safetensors: exercises the fallback too.
        try Safetensors.save(legacyNames(try Safetensors.load(VAEFixtures.weightsFile).tensors),
                             to: dir.appendingPathComponent("model.safetensors"))
        let legacy = try AutoencoderKL.load(directory: dir)
        let reference = try AutoencoderKL.load(directory: VAEFixtures.tinyVAE)
        let io = try VAEFixtures.io
        let z = try XCTUnwrap(io["vae.decode_in"]), x = try XCTUnwrap(io["vae.encode_in"])
        XCTAssertEqual(try legacy.decode(z).values(Float.self), try reference.decode(z).values(Float.self))
        XCTAssertEqual(try legacy.encode(x).mean.values(Float.self), try reference.encode(x).mean.values(Float.self))
        try assertClose("vae.decoded (legacy names)", legacy.decode(z), XCTUnwrap(io["vae.decoded"]))
    }

    // MARK: errors

    func testMissingConfigFieldIsNamed() throws {
        let text = try String(contentsOf: VAEFixtures.tinyVAE.appendingPathComponent("config.json"), encoding: .utf8)
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        json.removeValue(forKey: "block_out_channels")
        XCTAssertThrowsError(try decodeConfig(VAEConfig.self, from: JSONSerialization.data(withJSONObject: json), name: "config.json")) {
            XCTAssertEqual("\($0)", "config.json: missing field 'block_out_channels'")
        }
        // Through the loader the message names the file by its path.
        let dir = try VAEFixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var noScaling = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        noScaling.removeValue(forKey: "scaling_factor")
        try JSONSerialization.data(withJSONObject: noScaling).write(to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) {
            XCTAssertEqual("\($0)", "\(dir.path)/config.json: missing field 'scaling_factor'")
        }
    }

    func testUnsupportedConfigValuesAreRejected() throws {
        let text = try String(contentsOf: VAEFixtures.tinyVAE.appendingPathComponent("config.json"), encoding: .utf8)
        func decoded(_ edit: (inout [String: Any]) -> Void) throws -> VAEConfig {
            var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            edit(&json)
            return try decodeConfig(VAEConfig.self, from: JSONSerialization.data(withJSONObject: json), name: "config.json")
        }
        XCTAssertThrowsError(try decoded { $0["act_fn"] = "gelu" }) {
            XCTAssertEqual("\($0)", "config.json: field 'act_fn': unsupported activation 'gelu' (only silu)")
        }
        XCTAssertThrowsError(try decoded { $0["up_block_types"] = ["UpDecoderBlock2D"] }) {
            XCTAssertTrue("\($0)".hasPrefix("config.json: field 'up_block_types': expected 2 x UpDecoderBlock2D"), "\($0)")
        }
        XCTAssertThrowsError(try decoded { $0["norm_num_groups"] = 5 }) {
            XCTAssertTrue("\($0)".hasPrefix("config.json: field 'block_out_channels':"), "\($0)")
        }
        // Zero groups divided by zero before it was checked; a bad channel count was reported as latent_channels.
        XCTAssertThrowsError(try decoded { $0["norm_num_groups"] = 0 }) {
            XCTAssertEqual("\($0)", "config.json: field 'norm_num_groups': must be from 1 to 16777216 (got 0)")
        }
        XCTAssertThrowsError(try decoded { $0["in_channels"] = -3 }) {
            XCTAssertEqual("\($0)", "config.json: field 'in_channels': must be from 1 to 16777216 (got -3)")
        }
        XCTAssertThrowsError(try decoded { $0["scaling_factor"] = 0 }) {
            XCTAssertEqual("\($0)", "config.json: field 'scaling_factor': must be a finite number above 0 (got 0.0)")
        }
        // Optional fields take diffusers' defaults.
        let minimal = try decoded {
            for key in ["mid_block_add_attention", "use_quant_conv", "use_post_quant_conv", "force_upcast", "shift_factor"] {
                $0.removeValue(forKey: key)
            }
        }
        XCTAssertTrue(minimal.midBlockAddAttention && minimal.useQuantConv && minimal.usePostQuantConv && minimal.forceUpcast)
        XCTAssertNil(minimal.shiftFactor)
        XCTAssertEqual(try decoded { $0["shift_factor"] = 0.1159 }.shiftFactor, 0.1159)
    }

    func testMissingFilesAreNamed() throws {
        let dir = try VAEFixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) {
            XCTAssertEqual("\($0)", "\(dir.path): no config.json in the VAE folder")
        }
        try FileManager.default.copyItem(at: VAEFixtures.tinyVAE.appendingPathComponent("config.json"),
                                         to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try AutoencoderKL.load(directory: dir)) {
            XCTAssertEqual("\($0)", "\(dir.path): no diffusion_pytorch_model.safetensors in the VAE folder")
        }
    }

    func testWeightsWithTheWrongStructureAreRejected() throws {
        var weights = try Safetensors.load(VAEFixtures.weightsFile).tensors
        weights.removeValue(forKey: "decoder.conv_out.bias")
        let vae = AutoencoderKL(config: try decodeConfig(VAEConfig.self, from: VAEFixtures.tinyVAE.appendingPathComponent("config.json")))
        XCTAssertThrowsError(try vae.load(weights: weights, source: "x.safetensors")) {
            XCTAssertTrue("\($0)".contains("decoder.conv_out.bias"), "\($0)")
        }
    }
}
