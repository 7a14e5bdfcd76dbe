import Foundation
import ShapesWorld
import XCTest

final class GeneratorTests: XCTestCase {
    struct Output: Equatable {
        var prompts: [String], requirements: [Requirements], scenes: [Scene], images: [ShapeImage]
        var questions: [String], answers: [String], texts: [String]
    }

    func output(seed: UInt64, config: WorldConfig = .standard) -> Output {
        var world = WorldGenerator(seed: seed, config: config)
        let samples = (0..<60).map { world.generationSample(category: GenEvalCategory.allCases[$0 % 6]) }
        let scenes = (0..<60).map { _ in world.scene() }
        let questions = scenes.map { world.question(about: $0) } + scenes.flatMap { world.popeQuestions(about: $0, setting: .adversarial) }
        return Output(prompts: samples.map(\.prompt), requirements: samples.map(\.requirements), scenes: scenes,
                      images: (samples.map(\.scene) + scenes).map { $0.render(size: config.imageSize) },
                      questions: questions.map(\.question), answers: questions.map(\.answer), texts: (0..<200).map { _ in world.text() })
    }

    func testSameSeedGivesIdenticalOutputAndOtherSeedsDiffer() {
        for config in [WorldConfig.standard, .extended] {
            let a = output(seed: 1, config: config), b = output(seed: 1, config: config), c = output(seed: 2, config: config)
            XCTAssertEqual(a, b)
            XCTAssertEqual(a.images.map(\.pixels), b.images.map(\.pixels))
            XCTAssertNotEqual(a.prompts, c.prompts)
            XCTAssertNotEqual(a.images.map(\.pixels), c.images.map(\.pixels))
            XCTAssertNotEqual(a.texts, c.texts)
        }
        // SplitMix64's published first outputs for seed 0 (the stream is identical on every platform).
        var r = WorldRandom(seed: 0)
        XCTAssertEqual([r.next(), r.next(), r.next()], [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
    }

    func testStandardWorldDrawsWhatTheTwoByTwoOnlyGeneratorDrew() {
        // The demo's held-out stream of seed 0 (60 prompts a category, then questions about fresh scenes), as
        // report/generation_prompts.tsv and understanding_samples.md of a run of the build before grids of any size.
        var world = WorldGenerator(seed: 999_983)
        let prompts = GenEvalCategory.allCases.flatMap { c in (0..<60).map { _ in world.generationSample(category: c).prompt } }
        XCTAssertEqual(prompts.count, 360)
        for (row, prompt) in [(1, "a photo of a green square"), (61, "a photo of a yellow triangle and a yellow square"),
                              (150, "a photo of three green squares"), (241, "a photo of a yellow triangle left of a yellow square"),
                              (242, "a photo of a blue square above a green circle"), (300, "a photo of a yellow triangle below a blue circle"),
                              (360, "a photo of a yellow triangle and a red square")] {
            XCTAssertEqual(prompts[row - 1], prompt, "row \(row)")
        }
        let questions = (0..<3).map { _ in world.question(about: world.scene()) }
        XCTAssertEqual(questions.map(\.question), ["describe the image.", "is the blue circle at the top or at the bottom?", "is there a green triangle in the image?"])
        XCTAssertEqual(questions.map(\.answer), ["two objects: a green circle at the top left and a red circle at the bottom left", "bottom", "no"])
    }

    func testRenderingIsExactAtEverySize() {
        let scene = Scene(objects: [ShapeObject(kind: .square, color: .red, cell: .topLeft),
                                    ShapeObject(kind: .circle, color: .blue, cell: .bottomRight),
                                    ShapeObject(kind: .triangle, color: .yellow, cell: .topRight, size: .small)])
        for size in [16, 32, 64] {
            let image = scene.render(size: size)
            XCTAssertEqual(image.width, size)
            XCTAssertEqual(image.pixels.count, size * size * 3)
            func pixel(_ x: Double, _ y: Double) -> [UInt8] {
                let i = (Int(y) * size + Int(x)) * 3
                return Array(image.pixels[i..<(i + 3)])
            }
            let s = Double(size)
            XCTAssertEqual(pixel(0, 0), [128, 128, 128])
            XCTAssertEqual(pixel(s / 2, s / 2), [128, 128, 128])
            XCTAssertEqual(pixel(s / 4, s / 4), [220, 40, 40])
            XCTAssertEqual(pixel(s * 0.75, s * 0.75), [40, 80, 230])
            XCTAssertEqual(pixel(s * 0.75, s * 0.3), [235, 215, 40])
            // Every coloured pixel lies inside its object's box.
            for y in 0..<size {
                for x in 0..<size where image.pixels[(y * size + x) * 3] != 128 || image.pixels[(y * size + x) * 3 + 2] != 128 {
                    XCTAssertTrue(scene.objects.contains { o in
                        let b = o.boundingBox(imageSize: size)
                        return Double(x) + 0.5 >= b.x0 && Double(x) + 0.5 <= b.x1 && Double(y) + 0.5 >= b.y0 && Double(y) + 0.5 <= b.y1
                    }, "pixel \(x),\(y) at \(size)")
                }
            }
        }
        // Fill ratios of the shapes' pixel boxes at 64 pixels: square 1, circle pi/4, triangle and diamond 1/2.
        for (kind, fill) in [(ShapeKind.square, 1.0), (.circle, Double.pi / 4), (.triangle, 0.5), (.diamond, 0.5)] {
            let image = Scene(objects: [ShapeObject(kind: kind, color: .green, cell: .topLeft)]).render(size: 64)
            let inside = (0..<(64 * 64)).filter { image.pixels[3 * $0 + 1] == 190 }
            let xs = inside.map { $0 % 64 }, ys = inside.map { $0 / 64 }
            let box = Double((xs.max()! - xs.min()! + 1) * (ys.max()! - ys.min()! + 1))
            XCTAssertEqual(Double(inside.count) / box, fill, accuracy: 0.05, "\(kind)")
            XCTAssertEqual(Double(xs.max()! - xs.min()! + 1), 0.72 * 32, accuracy: 1.5, "\(kind)")
        }
    }

    func testGenerationSamplesFollowGenEvalAndTheirScenesSatisfyThem() throws {
        for config in [WorldConfig.standard, .extended] {
            var world = WorldGenerator(seed: 5, config: config)
            for i in 0..<600 {
                let category = GenEvalCategory.allCases[i % 6]
                let s = world.generationSample(category: category)
                let r = s.requirements
                XCTAssertEqual(r.category, category)
                XCTAssertTrue(s.prompt.hasPrefix("a photo of "), s.prompt)
                XCTAssertTrue(GenEvalScorer.isCorrect(s.scene.annotations(imageSize: config.imageSize), r), "\(s.prompt) \(s.scene)")
                XCTAssertEqual(Set(s.scene.objects.map(\.cell)).count, s.scene.objects.count)
                // The prompt names every object with its colour.
                for o in s.scene.objects {
                    XCTAssertTrue(s.prompt.contains(o.color.rawValue), s.prompt)
                    XCTAssertTrue(s.prompt.contains(o.kind.rawValue), s.prompt)
                }
                switch category {
                case .singleObject:
                    XCTAssertEqual(r.include.count, 1)
                    XCTAssertNil(r.include[0].color)
                case .colors:
                    XCTAssertEqual(r.include.count, 1)
                    XCTAssertEqual(r.include[0].color, s.scene.objects[0].color)
                case .twoObject:
                    XCTAssertEqual(r.include.count, 2)
                    XCTAssertNotEqual(r.include[0].shape, r.include[1].shape)
                    XCTAssertTrue(r.include.allSatisfy { $0.color == nil })
                case .colorAttr:
                    XCTAssertEqual(r.include.count, 2)
                    XCTAssertNotEqual(r.include[0].shape, r.include[1].shape)
                    XCTAssertNotEqual(r.include[0].color, r.include[1].color)
                    XCTAssertNotNil(r.include[1].color)
                case .counting:
                    XCTAssertEqual(r.include.count, 1)
                    XCTAssertTrue((2...4).contains(r.include[0].count))
                    XCTAssertEqual(r.exclude, [.init(shape: r.include[0].shape, count: r.include[0].count + 1)])
                    XCTAssertEqual(s.scene.objects.count, r.include[0].count)
                    XCTAssertTrue(s.prompt.hasPrefix("a photo of \(WorldGenerator.numberWord(r.include[0].count)) "))
                case .position:
                    // GenEval's layout: the reference first, the subject second with ["relation", 0].
                    XCTAssertEqual(r.include.count, 2)
                    let relation = try XCTUnwrap(r.include[1].position)
                    XCTAssertEqual(relation.target, 0)
                    XCTAssertTrue(s.prompt.contains(" \(relation.relation.rawValue) a "), s.prompt)
                    let (subject, reference) = (s.scene.objects[0], s.scene.objects[1])
                    XCTAssertEqual(subject.kind, r.include[1].shape)
                    XCTAssertEqual(reference.kind, r.include[0].shape)
                    XCTAssertTrue(subject.isIn(relation.relation, of: reference))
                    // Unambiguous: one row or one column.
                    XCTAssertTrue(subject.cell.row == reference.cell.row || subject.cell.column == reference.cell.column)
                }
            }
        }
        // The templates, word by word (standard world: one colour word and one shape word per object).
        var world = WorldGenerator(seed: 11)
        for _ in 0..<50 {
            let words = GenEvalCategory.allCases.map { world.generationSample(category: $0).prompt.split(separator: " ").count }
            XCTAssertEqual(words[0], 6)   // a photo of a red circle
            XCTAssertEqual(words[1], 10)  // a photo of a red circle and a blue square
            XCTAssertEqual(words[2], 6)   // a photo of three green triangles
            XCTAssertEqual(words[3], 6)   // a photo of a yellow square
            XCTAssertTrue([10, 11].contains(words[4]))  // a photo of a blue square (left of | above) a yellow triangle
            XCTAssertEqual(words[5], 10)  // a photo of a red circle and a green square
        }
    }

    /// Answers computed independently from the question text and the scene.
    func oracle(_ question: String, _ scene: Scene, _ world: WorldGenerator) -> String? {
        func objects(_ phrase: String) -> [ShapeObject] { scene.objects.filter { world.phrase($0) == phrase } }
        func at(_ cellName: String) -> ShapeObject? { scene.objects.first { $0.cell.name == cellName } }
        func between(_ s: String, _ prefix: String, _ suffix: String) -> String? {
            s.hasPrefix(prefix) && s.hasSuffix(suffix) && s.count > prefix.count + suffix.count
                ? String(s.dropFirst(prefix.count).dropLast(suffix.count)) : nil
        }
        let word = WorldGenerator.numberWord
        if let c = between(question, "what shape is the ", " object?") {
            let m = scene.objects.filter { $0.color.rawValue == c }
            return m.count == 1 ? m[0].kind.rawValue : nil
        }
        if let cell = between(question, "what shape is at the ", "?") { return at(cell)?.kind.rawValue }
        if let cell = between(question, "what color is the shape at the ", "?") { return at(cell)?.color.rawValue }
        if let k = between(question, "what color is the ", "?") {
            let m = scene.objects.filter { $0.kind.rawValue == k }
            return m.count == 1 ? m[0].color.rawValue : nil
        }
        if question == "how many shapes are there?" { return word(scene.objects.count) }
        if let c = between(question, "how many ", " shapes are there?") { return word(scene.objects.filter { $0.color.rawValue == c }.count) }
        if let k = between(question, "how many ", " are there?") { return word(scene.objects.filter { $0.kind.plural == k }.count) }
        if let p = between(question, "where is the ", "?") { return objects(p).count == 1 ? objects(p)[0].cell.name : nil }
        if let p = between(question, "is the ", " on the left or on the right?") {
            return objects(p).count == 1 ? (objects(p)[0].cell.column == 0 ? "left" : "right") : nil
        }
        if let p = between(question, "is the ", " at the top or at the bottom?") {
            return objects(p).count == 1 ? (objects(p)[0].cell.row == 0 ? "top" : "bottom") : nil
        }
        // The 3x3 grid's forms.
        if let p = between(question, "is the ", " on the left, in the center or on the right?") {
            return objects(p).count == 1 ? ["left", "center", "right"][objects(p)[0].cell.column] : nil
        }
        if let p = between(question, "is the ", " at the top, in the middle or at the bottom?") {
            return objects(p).count == 1 ? ["top", "middle", "bottom"][objects(p)[0].cell.row] : nil
        }
        if let cell = between(question, "what is at the ", "?") { return at(cell).map { world.phrase($0) } ?? "nothing" }
        if let cell = between(question, "how big is the shape at the ", "?") { return at(cell)?.size.rawValue }
        if let p = between(question, "is there a ", " in the image?") { return objects(p).isEmpty ? "no" : "yes" }
        if question == "describe the image." { return world.describe(scene) }
        if let body = between(question, "is the ", "?") {
            for relation in SpatialRelation.allCases {
                let parts = body.components(separatedBy: " \(relation.rawValue) the ")
                if parts.count == 2, objects(parts[0]).count == 1, objects(parts[1]).count == 1 {
                    return objects(parts[0])[0].isIn(relation, of: objects(parts[1])[0]) ? "yes" : "no"
                }
            }
        }
        return nil
    }

    func testEveryQuestionIsUnambiguousAndCorrectlyAnswered() {
        for config in [WorldConfig.standard, .extended] {
            var world = WorldGenerator(seed: 8, config: config)
            var types: [String: Int] = [:]
            for _ in 0..<3000 {
                let scene = world.scene()
                let q = world.question(about: scene)
                types[q.type, default: 0] += 1
                XCTAssertEqual(oracle(q.question, scene, world), q.answer, "\(q.question) \(scene)")
                XCTAssertEqual(q.scene, scene)
            }
            XCTAssertEqual(Set(types.keys), Set(world.questionTypes.map(\.rawValue)))
            XCTAssertEqual(types["size"] != nil, config.sizes.count > 1)
        }
        // A hand-built scene.
        let world = WorldGenerator(seed: 0)
        let scene = Scene(objects: [ShapeObject(kind: .square, color: .blue, cell: .bottomRight),
                                    ShapeObject(kind: .circle, color: .red, cell: .topLeft)])
        XCTAssertEqual(world.describe(scene), "two objects: a red circle at the top left and a blue square at the bottom right")
        XCTAssertEqual(world.describe(Scene(objects: [ShapeObject(kind: .triangle, color: .green, cell: .topRight)])),
                       "one object: a green triangle at the top right")
        XCTAssertEqual(world.describe(Scene(objects: [])), "no objects")
        XCTAssertEqual(oracle("is the red circle above the blue square?", scene, world), "yes")
        XCTAssertEqual(oracle("is the blue square left of the red circle?", scene, world), "no")
    }

    func testPOPEQuestionsAreBalancedAndNegativesFollowTheSetting() {
        var world = WorldGenerator(seed: 21)
        let scenes = (0..<400).map { _ in world.scene() }
        // How confusable an absent object is with a scene: shares a present colour, a present shape, or both.
        func confusion(_ phrase: String, _ scene: Scene) -> Int {
            (scene.objects.contains { phrase.hasPrefix($0.color.rawValue + " ") } ? 1 : 0)
                + (scene.objects.contains { phrase.hasSuffix(" " + $0.kind.rawValue) } ? 1 : 0)
        }
        var meanConfusion: [POPESetting: Double] = [:]
        for setting in POPESetting.allCases {
            var yes = 0, total = 0, confusionSum = 0, negativesCount = 0
            for scene in scenes {
                let qs = world.popeQuestions(about: scene, setting: setting)
                let present = Set(scene.objects.map { world.phrase($0) })
                XCTAssertEqual(qs.filter { $0.answer == "yes" }.count, qs.filter { $0.answer == "no" }.count)
                XCTAssertEqual(qs.filter { $0.answer == "yes" }.count, Swift.min(3, present.count))
                XCTAssertEqual(Set(qs.map(\.question)).count, qs.count)
                var negatives: [String] = []
                for q in qs {
                    XCTAssertEqual(q.type, "pope")
                    XCTAssertEqual(q.popeSetting, setting)
                    let phrase = String(q.question.dropFirst("is there a ".count).dropLast(" in the image?".count))
                    XCTAssertEqual(present.contains(phrase), q.answer == "yes", q.question)
                    if q.answer == "no" { negatives.append(phrase) }
                }
                yes += qs.filter { $0.answer == "yes" }.count
                total += qs.count
                confusionSum += negatives.map { confusion($0, scene) }.reduce(0, +)
                negativesCount += negatives.count
                if setting == .adversarial {
                    // No absent object left out is more confusable than one chosen.
                    let others = ShapeColor.allCases.prefix(4).flatMap { c in [ShapeKind.circle, .square, .triangle].map { "\(c.rawValue) \($0.rawValue)" } }
                        .filter { !present.contains($0) && !negatives.contains($0) }
                    XCTAssertGreaterThanOrEqual(negatives.map { confusion($0, scene) }.min()!, others.map { confusion($0, scene) }.max() ?? 0)
                }
            }
            XCTAssertEqual(Double(yes) / Double(total), 0.5)
            meanConfusion[setting] = Double(confusionSum) / Double(negativesCount)
        }
        print("POPE negatives, mean shared attributes with the scene: \(meanConfusion)")
        XCTAssertGreaterThan(meanConfusion[.adversarial]!, meanConfusion[.random]! + 0.5)
        // Popular: the most frequent absent objects.
        var w = WorldGenerator(seed: 1)
        w.objectFrequencies = ["green triangle": 50, "yellow square": 40, "red circle": 30]
        let scene = Scene(objects: [ShapeObject(kind: .circle, color: .red, cell: .topLeft), ShapeObject(kind: .square, color: .blue, cell: .topRight)])
        let negatives = w.popeQuestions(about: scene, setting: .popular).filter { $0.answer == "no" }.map(\.question).sorted()
        XCTAssertEqual(negatives, ["is there a green triangle in the image?", "is there a yellow square in the image?"])
        // Random single POPE questions are balanced too.
        var g = WorldGenerator(seed: 3)
        let single = (0..<1000).map { _ in g.question(about: g.scene(), type: .pope) }
        XCTAssertEqual(Double(single.filter { $0.answer == "yes" }.count) / 1000, 0.5, accuracy: 0.05)
    }

    func testTextIsCleanAndCoveredByTheVocabulary() {
        for config in [WorldConfig.standard, .extended] {
            var world = WorldGenerator(seed: 4, config: config)
            let vocabulary = Set(world.vocabulary)
            XCTAssertEqual(ShapesWorld.vocabulary(config: config), world.vocabulary)
            var texts = (0..<5000).map { _ in world.text() }
            for c in GenEvalCategory.allCases { texts += (0..<200).map { _ in world.generationSample(category: c).prompt } }
            for _ in 0..<2000 {
                let s = world.scene()
                let q = world.question(about: s)
                texts += [q.question, q.answer, world.describe(s)]
                texts += world.popeQuestions(about: s, setting: .random).map(\.question)
            }
            var used = Set<String>()
            for t in texts {
                XCTAssertTrue(t.unicodeScalars.allSatisfy { $0.isASCII && !CharacterSet.uppercaseLetters.contains($0) }, t)
                XCTAssertFalse(t.contains("  "), t)
                for w in t.split(whereSeparator: { " .,:?".contains($0) }) {
                    XCTAssertTrue(vocabulary.contains(String(w)), "'\(w)' in '\(t)'")
                    used.insert(String(w))
                }
            }
            // The vocabulary is tight: every word in it occurs.
            XCTAssertEqual(vocabulary.subtracting(used), [], "never produced")
            XCTAssertTrue(world.facts.contains("a triangle has three corners."))
        }
        XCTAssertEqual(ShapesWorld.vocabulary(), [
            "a", "above", "and", "answer", "are", "at", "background", "below", "blue", "bottom", "circle", "circles", "color",
            "corners", "describe", "equal", "four", "gray", "green", "has", "how", "image", "in", "is", "left", "make", "many",
            "no", "nothing", "object", "objects", "of", "on", "one", "opposite", "or", "photo", "picture", "question", "red",
            "right", "round", "shape", "shapes", "shows", "sides", "square", "squares", "the", "there", "three", "top",
            "triangle", "triangles", "two", "what", "where", "yellow", "yes", "zero",
        ])
    }

    func testMetadataLinesAreGenEvalsFormatAndRoundTrip() throws {
        let position = Requirements(category: .position, include: [.init(shape: .square, count: 1),
                                                                   .init(shape: .circle, count: 1, position: .init(.leftOf, of: 0))])
        XCTAssertEqual(position.metadataLine(prompt: "a photo of a red circle left of a blue square"),
                       #"{"tag": "position", "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}], "prompt": "a photo of a red circle left of a blue square"}"#)
        let counting = Requirements(category: .counting, include: [.init(shape: .triangle, count: 3)], exclude: [.init(shape: .triangle, count: 4)])
        XCTAssertEqual(counting.metadataLine(prompt: "a photo of three green triangles"),
                       #"{"tag": "counting", "include": [{"class": "triangle", "count": 3}], "exclude": [{"class": "triangle", "count": 4}], "prompt": "a photo of three green triangles"}"#)
        let colorAttr = Requirements(category: .colorAttr, include: [.init(shape: .circle, count: 1, color: .red), .init(shape: .square, count: 1, color: .green)])
        XCTAssertEqual(colorAttr.metadataLine(prompt: "p"),
                       #"{"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "green"}], "prompt": "p"}"#)
        for r in [position, counting, colorAttr] {
            let parsed = try Requirements.parseMetadataLine(r.metadataLine(prompt: "x \"quoted\""))
            XCTAssertEqual(parsed.requirements, r)
            XCTAssertEqual(parsed.prompt, "x \"quoted\"")
        }
        var world = WorldGenerator(seed: 2, config: .extended)
        for i in 0..<120 {
            let s = world.generationSample(category: GenEvalCategory.allCases[i % 6])
            let parsed = try Requirements.parseMetadataLine(s.requirements.metadataLine(prompt: s.prompt))
            XCTAssertEqual(parsed.requirements, s.requirements)
            XCTAssertEqual(parsed.prompt, s.prompt)
        }
        XCTAssertThrowsError(try Requirements.parseMetadataLine(#"{"tag": "two_object", "include": [{"class": "dog", "count": 1}], "prompt": "a dog"}"#))
        XCTAssertThrowsError(try Requirements.parseMetadataLine(#"{"tag": "nope", "include": [], "prompt": "a"}"#))
    }

    func testConvenienceEntryPointsMatchTheGenerator() {
        var rng = WorldRandom(seed: 9)
        var world = WorldGenerator(seed: 9)
        XCTAssertEqual(ShapesWorld.generationSample(.counting, rng: &rng), world.generationSample(category: .counting))
        let scene = ShapesWorld.randomScene(rng: &rng)
        XCTAssertEqual(scene, world.scene())
        XCTAssertEqual(ShapesWorld.question(about: scene, rng: &rng), world.question(about: scene))
        XCTAssertEqual(ShapesWorld.textSample(rng: &rng), world.text())
        XCTAssertEqual(rng.next(), world.random.next())
    }

    func testPositionTwinsAndPlacedSamplesSatisfyWhatTheySay() {
        var world = WorldGenerator(seed: 11)
        for _ in 0..<100 {
            let sample = world.generationSample(category: .position)
            guard let twin = WorldGenerator.positionTwin(of: sample) else { return XCTFail("no twin for \(sample.prompt)") }
            // The twin differs only in the relation word, and its own scene satisfies it while the original's does not.
            let words = (sample.prompt.split(separator: " "), twin.prompt.split(separator: " "))
            XCTAssertEqual(words.0.count, words.1.count, twin.prompt)
            XCTAssertEqual(zip(words.0, words.1).filter { $0 != $1 }.count, 1, "\(sample.prompt) / \(twin.prompt)")
            XCTAssertTrue(GenEvalScorer.score(image: twin.scene.render(size: 32), requirements: twin.requirements), twin.prompt)
            XCTAssertFalse(GenEvalScorer.score(image: sample.scene.render(size: 32), requirements: twin.requirements), twin.prompt)
            XCTAssertEqual(WorldGenerator.positionTwin(of: twin)?.prompt, sample.prompt)
        }
        XCTAssertNil(WorldGenerator.positionTwin(of: world.generationSample(category: .colorAttr)))
        // Placed samples: one or two objects of different shapes, each named with its cell, in reading order.
        for _ in 0..<100 {
            let placed = world.placedSample()
            let objects = placed.scene.objects
            XCTAssertTrue((1...2).contains(objects.count))
            XCTAssertEqual(Set(objects.map(\.kind)).count, objects.count)
            XCTAssertEqual(placed.prompt, "a photo of " + objects.map { "a \($0.color.rawValue) \($0.kind.rawValue) at the \($0.cell.name)" }.joined(separator: " and "))
            XCTAssertEqual(objects.map(\.cell.index), objects.map(\.cell.index).sorted())
        }
    }
}

final class EncoderLabelTests: XCTestCase {
    func testPatchAndCountTargetsOfAKnownScene() {
        // Colours red, green, blue, yellow (0-3); shapes circle, square, triangle (0-2); "none" is the last class.
        let world = WorldConfig()
        let scene = Scene(objects: [ShapeObject(kind: .square, color: .red, cell: .topLeft),
                                    ShapeObject(kind: .circle, color: .blue, cell: .topRight),
                                    ShapeObject(kind: .square, color: .red, cell: .bottomRight)])
        let labels = EncoderLabels(scene: scene, world: world)
        // Row-major 4x4 patches: top-left cell = patches 0, 1, 4, 5; top-right 2, 3, 6, 7; bottom-right 10, 11, 14, 15.
        XCTAssertEqual(labels.color, [0, 0, 2, 2, 0, 0, 2, 2, 4, 4, 0, 0, 4, 4, 0, 0])
        XCTAssertEqual(labels.shape, [1, 1, 0, 0, 1, 1, 0, 0, 3, 3, 1, 1, 3, 3, 1, 1])
        // Pair = colour * 3 + shape: red square 1, blue circle 6, none 12.
        XCTAssertEqual(labels.pair, [1, 1, 6, 6, 1, 1, 6, 6, 12, 12, 1, 1, 12, 12, 1, 1])
        XCTAssertEqual(EncoderLabels.countTargets(world), 12 + 4 + 3 + 1)
        var counts = [Int32](repeating: 0, count: 20)
        counts[1] = 2  // red squares
        counts[6] = 1  // blue circles
        counts[12 + 0] = 2  // red
        counts[12 + 2] = 1  // blue
        counts[16 + 0] = 1  // circles
        counts[16 + 1] = 2  // squares
        counts[19] = 3  // objects
        XCTAssertEqual(labels.counts, counts)
    }
}
