import Foundation

/// A trainable tensor held by a module, found by name through reflection.
///
/// Declare parameters as `@Parameter var weight: Tensor` (key "weight"), `@Parameter("embed_tokens") var
/// embedTokens: Tensor` to use a checkpoint name that is not a Swift name, or `@Parameter var bias: Tensor?`
/// for one that may be absent (a nil parameter is not part of the module).
@propertyWrapper
public final class Parameter<Value>: ParameterSlot {
    private var value: Value?
    /// The checkpoint name given to the wrapper, or nil to use the property's name.
    public let key: String?
    /// Frozen parameters are left out of `trainableParameters()` and so are never updated by an optimizer.
    public var isFrozen = false

    /// The parameter's value; reading it before it is set stops the program with a precondition failure.
    public var wrappedValue: Value {
        get {
            guard let value else { preconditionFailure("parameter '\(key ?? "?")' read before it was set") }
            return value
        }
        set { value = newValue }
    }

    /// Declares a parameter with an initial value and, optionally, a checkpoint key.
    public init(wrappedValue: Value, _ key: String? = nil) {
        self.value = wrappedValue
        self.key = key
    }

    /// Declared with a checkpoint key and no value; the owner's initialiser assigns it after `super.init()`.
    public init(_ key: String) {
        self.key = key
    }

    /// The value as a `Tensor`: nil when unset, nil for an optional parameter holding nil; assigning nil changes nothing.
    public var tensor: Tensor? {
        get {
            guard let value else { return nil }
            if let t = value as? Tensor { return t }
            if let t = value as? Tensor? { return t }
            return nil
        }
        set {
            guard let newValue else { return }
            if let v = newValue as? Value { value = v } else if let v = Optional(newValue) as? Value { value = v }
        }
    }
}

/// What the module system needs of a parameter, whatever its declared type.
public protocol ParameterSlot: AnyObject {
    /// The checkpoint name, or nil when the property's name serves.
    var key: String? { get }
    /// Whether `trainableParameters()` leaves this parameter out, so optimizers never change it.
    var isFrozen: Bool { get set }
    /// The parameter's tensor, nil when it has none; the module tree reads and replaces parameters through it.
    var tensor: Tensor? { get set }
}

/// A sub-module (or an array of sub-modules, or an optional one) stored under a checkpoint key that differs
/// from the Swift property name. Plain stored properties of Module type are found too, under their own name.
@propertyWrapper
public final class Child<Value> {
    private var value: Value?
    /// The checkpoint name the sub-module is stored under.
    public let key: String

    /// The sub-module; assigning it makes every module rediscover its members.
    public var wrappedValue: Value {
        get {
            guard let value else { preconditionFailure("sub-module '\(key)' read before it was set") }
            return value
        }
        set {
            value = newValue
            Module.structureChanged()
        }
    }

    /// Declares a sub-module with its value and checkpoint key.
    public init(wrappedValue: Value, _ key: String) {
        self.value = wrappedValue
        self.key = key
    }

    /// Declared without a value; the owner's initialiser assigns it.
    public init(_ key: String) {
        self.key = key
    }
}

protocol AnyChild {
    var childKey: String { get }
    var childValue: Any { get }
}

extension Child: AnyChild {
    var childKey: String { key }
    var childValue: Any { value as Any }
}

/// A problem binding weights to a module tree; lists every culprit by name.
public struct WeightLoadingError: Error, CustomStringConvertible, Equatable {
    /// Parameters of the model that the weights lack.
    public var missing: [String] = []
    /// Weights that name no parameter of the model.
    public var unexpected: [String] = []
    /// Parameters whose weight has the wrong shape or dtype, each with what was expected and what was found.
    public var mismatched: [String] = []  // "name: expected [..], found [..]"
    /// Where the weights came from (a file, say), put in front of the message; empty when unknown.
    public var source: String = ""

    /// Whether no problem of any kind was recorded.
    public var isEmpty: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    /// One message listing each kind of problem with its sorted names, prefixed by `source` when set.
    public var description: String {
        var parts: [String] = []
        if !missing.isEmpty { parts.append("missing \(missing.count) tensor(s): \(missing.sorted().joined(separator: ", "))") }
        if !unexpected.isEmpty { parts.append("unexpected \(unexpected.count) tensor(s): \(unexpected.sorted().joined(separator: ", "))") }
        if !mismatched.isEmpty { parts.append("wrong shape or dtype for \(mismatched.count) tensor(s): \(mismatched.sorted().joined(separator: "; "))") }
        let prefix = source.isEmpty ? "weights do not match the model" : "\(source): weights do not match the model"
        return "\(prefix): " + parts.joined(separator: "; ")
    }
}

/// Base class of every layer and model. Parameters and sub-modules are discovered by reflection, so a model
/// declares its structure once, as stored properties named like the checkpoint.
open class Module {
    /// Training mode switches dropout on.
    public var training = false

    /// Creates a module; a subclass declares its parameters and sub-modules as stored properties.
    public init() {}

    // Reflection is slow (milliseconds for a model, several times a training step), so each module keeps what it
    // found: its parameter slots (references, so new tensors are seen) and its children. A `@Child` assignment
    // anywhere drops every module's copy; so does `structureChanged()`, for a sub-module assigned to a plain `var`.
    // The lock keeps concurrent readers (pipelines on other tasks) from racing on the caches.
    private var membersCache: (generation: Int, params: [(String, ParameterSlot)], children: [(String, Module)])?
    nonisolated(unsafe) private static var generation = 0
    private static let cacheLock = NSLock()

    /// Call after assigning a sub-module to a plain stored `var` (not `@Child`) of a module that was already
    /// used: modules remember their members, and only `@Child` assignments tell them.
    public static func structureChanged() { cacheLock.withLock { generation &+= 1 } }

    /// Direct parameters (those holding a tensor) and children of this module, in declaration order.
    func directMembers() -> (params: [(String, ParameterSlot)], children: [(String, Module)]) {
        let cache = Module.cacheLock.withLock {
            if membersCache?.generation != Module.generation {
                let (params, children) = reflectedMembers()
                membersCache = (Module.generation, params, children)
            }
            return membersCache!
        }
        return (cache.params.filter { $0.1.tensor != nil }, cache.children)
    }

    /// Every parameter slot (set or not) and child, by reflection.
    private func reflectedMembers() -> (params: [(String, ParameterSlot)], children: [(String, Module)]) {
        var params: [(String, ParameterSlot)] = []
        var children: [(String, Module)] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        var levels: [Mirror] = []
        while let m = mirror {
            levels.append(m)
            mirror = m.superclassMirror
        }
        for m in levels.reversed() {
            for child in m.children {
                guard var label = child.label else { continue }
                if label.hasPrefix("_") { label.removeFirst() }
                if let p = child.value as? ParameterSlot {
                    params.append((p.key ?? label, p))
                } else if let c = child.value as? AnyChild {
                    Module.collect(c.childValue, key: c.childKey, into: &children)
                } else {
                    Module.collect(child.value, key: label, into: &children)
                }
            }
        }
        return (params, children)
    }

    private static func collect(_ value: Any, key: String, into children: inout [(String, Module)]) {
        if let m = value as? Module {
            children.append((key, m))
        } else if let list = value as? [Module] {
            for (i, m) in list.enumerated() { children.append(("\(key).\(i)", m)) }
        } else if let opt = value as? Module?, let m = opt {
            children.append((key, m))
        }
    }

    /// Every parameter slot in the tree with its dotted name ("layers.0.attn.q_proj.weight").
    public func parameterSlots(prefix: String = "") -> [(String, ParameterSlot)] {
        let (params, children) = directMembers()
        var out = params.map { (prefix + $0.0, $0.1) }
        for (key, child) in children { out += child.parameterSlots(prefix: prefix + key + ".") }
        return out
    }

    /// Every module in the tree with its dotted name ("" for self).
    public func namedModules(prefix: String = "") -> [(String, Module)] {
        var out: [(String, Module)] = [(prefix.isEmpty ? "" : String(prefix.dropLast()), self)]
        for (key, child) in directMembers().children { out += child.namedModules(prefix: prefix + key + ".") }
        return out
    }

    /// All parameters by dotted name.
    public func parameters() -> [String: Tensor] {
        Dictionary(parameterSlots().map { ($0.0, $0.1.tensor!) }, uniquingKeysWith: { a, _ in a })
    }

    /// The parameters an optimizer may change (not frozen).
    public func trainableParameters() -> [String: Tensor] {
        Dictionary(parameterSlots().filter { !$0.1.isFrozen }.map { ($0.0, $0.1.tensor!) }, uniquingKeysWith: { a, _ in a })
    }

    /// Replaces the named parameters. Every name must exist; shapes must match unless `checkShapes` is false.
    public func update(parameters new: [String: Tensor], checkShapes: Bool = true) throws {
        let slots = Dictionary(parameterSlots(), uniquingKeysWith: { a, _ in a })
        var error = WeightLoadingError()
        for (name, value) in new {
            guard let slot = slots[name] else { error.unexpected.append(name); continue }
            if checkShapes, slot.tensor!.shape != value.shape {
                error.mismatched.append("\(name): expected \(slot.tensor!.shape), found \(value.shape)")
                continue
            }
        }
        guard error.isEmpty else { throw error }
        for (name, value) in new { slots[name]!.tensor = value }
    }

    /// Binds checkpoint weights strictly: every parameter must be present with its shape, and nothing extra.
    /// Floating weights are converted to `dtype` when given. Nothing changes unless every check passes.
    public func load(weights: [String: Tensor], dtype: DType? = nil, source: String = "") throws {
        let slots = parameterSlots()
        var error = WeightLoadingError(source: source)
        let names = Set(slots.map { $0.0 })
        for (name, slot) in slots {
            guard let w = weights[name] else { error.missing.append(name); continue }
            if w.shape != slot.tensor!.shape {
                error.mismatched.append("\(name): expected \(slot.tensor!.shape), found \(w.shape)")
            } else if !w.dtype.isFloatingPoint && slot.tensor!.dtype.isFloatingPoint {
                error.mismatched.append("\(name): expected a floating-point dtype, found \(w.dtype)")
            }
        }
        error.unexpected = weights.keys.filter { !names.contains($0) }
        guard error.isEmpty else { throw error }
        for (name, slot) in slots {
            let w = weights[name]!
            slot.tensor = dtype.map { w.dtype.isFloatingPoint ? w.asType($0) : w } ?? w
        }
    }

    /// Freezes every parameter whose dotted name starts with one of `prefixes` (all when empty).
    public func freeze(prefixes: [String] = []) {
        for (name, slot) in parameterSlots() where prefixes.isEmpty || prefixes.contains(where: { Module.matches(name, $0) }) {
            slot.isFrozen = true
        }
    }

    /// Unfreezes every parameter whose dotted name starts with one of `prefixes` (all when empty).
    public func unfreeze(prefixes: [String] = []) {
        for (name, slot) in parameterSlots() where prefixes.isEmpty || prefixes.contains(where: { Module.matches(name, $0) }) {
            slot.isFrozen = false
        }
    }

    /// "a.b" matches "a.b", "a.b.c" but not "a.bc".
    static func matches(_ name: String, _ prefix: String) -> Bool {
        name == prefix || name.hasPrefix(prefix.hasSuffix(".") ? prefix : prefix + ".")
    }

    /// Sets training mode on the whole tree.
    public func train(_ on: Bool = true) {
        for (_, m) in namedModules() { m.training = on }
    }

    /// Converts every floating parameter to `dtype`.
    public func cast(to dtype: DType) {
        for (_, slot) in parameterSlots() where slot.tensor!.dtype.isFloatingPoint {
            slot.tensor = slot.tensor!.asType(dtype)
        }
    }

    /// Total number of parameter elements.
    public var parameterCount: Int { parameterSlots().reduce(0) { $0 + $1.1.tensor!.size } }

    /// Evaluates every parameter (materialises lazy initialisers or loads).
    public func evalParameters() throws { try Tensor.eval(parameterSlots().map { $0.1.tensor! }) }
}
