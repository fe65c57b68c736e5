// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.37;

import {INovaAppInterface} from "./interfaces/INovaAppInterface.sol";

/// @title KMSRegistry
/// @notice The set of novakms operators (TEE wallets of ACTIVE KMS instances), the owner's
///         pin of the cluster master secret's fingerprint, and the owner's guardian set for
///         threshold backup / recovery of that secret.
/// @dev The KMS app's `dappContract` on NovaAppRegistry is this contract, so the registry's
///      `addOperator` / `removeOperator` callbacks keep the operator set in step with instance
///      registration and status changes. Only the configured registry may call them, only for
///      `kmsAppId`. Both callbacks are idempotent (a repeated add or a remove of an unknown
///      wallet changes nothing and emits nothing); removal is O(1) swap-and-pop.
///      Nodes still check each operator's instance on NovaAppRegistry (ACTIVE, zkVerified, app
///      and version status): membership here is necessary, not sufficient.
///
///      The guardian set: `threshold` of its `wallets` (each with an X25519 HPKE public key in
///      `encKeys`, same index) can together recover the master secret from a backup whose
///      shares are encrypted to those keys. The owner replaces it as a whole (`setGuardians`)
///      or empties it (`clearGuardians`); each change bumps `guardianSetVersion`, so a backup
///      names the exact set it was made for. Version 0 means no set was ever configured.
contract KMSRegistry is INovaAppInterface {
    // ------------------------------------------------------------------ errors

    error NotOwner();
    error NotNovaAppRegistry();
    error WrongApp(uint256 appId, uint256 kmsAppId);
    error KmsAppIdNotSet();
    error KmsAppIdAlreadySet();
    error ZeroAppId();
    error ZeroAddress();
    error ZeroHash();
    error IndexOutOfRange();
    error GuardianLengthMismatch(uint256 wallets, uint256 encKeys);
    error GuardianCountOutOfRange(uint256 count, uint256 max);
    error ThresholdOutOfRange(uint8 threshold, uint256 count);
    error ZeroGuardianWallet(uint256 index);
    error ZeroGuardianEncKey(uint256 index);
    error DuplicateGuardian(address wallet);
    error DuplicateGuardianEncKey(uint256 index);

    // ------------------------------------------------------------------ events

    event OperatorAdded(address indexed operator, uint256 indexed appId, uint256 versionId, uint256 instanceId);
    event OperatorRemoved(address indexed operator, uint256 indexed appId, uint256 versionId, uint256 instanceId);
    event KmsAppIdSet(uint256 indexed appId);
    event NovaAppRegistrySet(address indexed registry);
    event MasterSecretHashSet(bytes32 hash);
    event MasterSecretHashReset();
    event GuardiansSet(uint256 indexed version, address[] wallets, bytes32[] encKeys, uint8 threshold);
    event GuardiansCleared(uint256 indexed version);

    // ------------------------------------------------------------------ constants

    /// @notice The largest guardian set `setGuardians` accepts.
    uint256 public constant MAX_GUARDIANS = 16;

    // ------------------------------------------------------------------ state

    /// @notice The deployer; the only account allowed to change the configuration.
    address public immutable owner;

    /// @notice The NovaAppRegistry (proxy) address allowed to call the operator callbacks.
    address public novaAppRegistry;

    /// @notice The KMS app's id on NovaAppRegistry; 0 until set (once) by the owner.
    uint256 public kmsAppId;

    /// @notice keccak256 of the cluster master secret as pinned by the owner; zero = no pin.
    bytes32 public masterSecretHash;

    address[] private _operators;
    /// @dev operator => its index in `_operators` plus one (0 = not an operator).
    mapping(address => uint256) private _slot;

    /// @notice Bumped by every `setGuardians` and `clearGuardians`; 0 = never configured.
    uint256 public guardianSetVersion;

    address[] private _guardianWallets;
    /// @dev The guardians' X25519 HPKE public keys, in the order of `_guardianWallets`.
    bytes32[] private _guardianEncKeys;
    /// @dev 0 while the set is empty.
    uint8 private _guardianThreshold;
    /// @dev wallet => the guardian set version it belongs to (a stale version = not a guardian,
    ///      so replacing or clearing the set needs no per-wallet deletes).
    mapping(address => uint256) private _guardianOf;

    // ------------------------------------------------------------------ setup

    constructor(address novaAppRegistry_) {
        if (novaAppRegistry_ == address(0)) revert ZeroAddress();
        owner = msg.sender;
        novaAppRegistry = novaAppRegistry_;
        emit NovaAppRegistrySet(novaAppRegistry_);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier onlyKmsCallback(uint256 appId) {
        if (msg.sender != novaAppRegistry) revert NotNovaAppRegistry();
        uint256 expected = kmsAppId;
        if (expected == 0) revert KmsAppIdNotSet();
        if (appId != expected) revert WrongApp(appId, expected);
        _;
    }

    // ------------------------------------------------------------------ owner configuration

    /// @notice Set the KMS app id; possible exactly once, and never to zero.
    function setKmsAppId(uint256 appId) external onlyOwner {
        if (kmsAppId != 0) revert KmsAppIdAlreadySet();
        if (appId == 0) revert ZeroAppId();
        kmsAppId = appId;
        emit KmsAppIdSet(appId);
    }

    /// @notice Point the callbacks at another NovaAppRegistry address (e.g. a new proxy).
    function setNovaAppRegistry(address registry) external onlyOwner {
        if (registry == address(0)) revert ZeroAddress();
        novaAppRegistry = registry;
        emit NovaAppRegistrySet(registry);
    }

    /// @notice Pin the master secret's fingerprint; nodes then never generate, accept or serve
    ///         a secret whose keccak256 differs.
    function setMasterSecretHash(bytes32 hash) external onlyOwner {
        if (hash == bytes32(0)) revert ZeroHash();
        masterSecretHash = hash;
        emit MasterSecretHashSet(hash);
    }

    /// @notice Remove the pin.
    function resetMasterSecretHash() external onlyOwner {
        masterSecretHash = bytes32(0);
        emit MasterSecretHashReset();
    }

    /// @notice Replace the guardian set (and bump `guardianSetVersion`).
    /// @param wallets the guardians' addresses: 1..MAX_GUARDIANS, non-zero, no duplicates.
    /// @param encKeys each guardian's X25519 HPKE public key (32 bytes, non-zero, no two alike:
    ///        one key holding two shares would lower the threshold), same order.
    /// @param threshold how many guardians recovery needs: 1..wallets.length.
    function setGuardians(address[] calldata wallets, bytes32[] calldata encKeys, uint8 threshold) external onlyOwner {
        uint256 n = wallets.length;
        if (encKeys.length != n) revert GuardianLengthMismatch(n, encKeys.length);
        if (n == 0 || n > MAX_GUARDIANS) revert GuardianCountOutOfRange(n, MAX_GUARDIANS);
        if (threshold == 0 || threshold > n) revert ThresholdOutOfRange(threshold, n);
        uint256 version = guardianSetVersion + 1;
        for (uint256 i = 0; i < n; i++) {
            address wallet = wallets[i];
            if (wallet == address(0)) revert ZeroGuardianWallet(i);
            if (encKeys[i] == bytes32(0)) revert ZeroGuardianEncKey(i);
            for (uint256 j = 0; j < i; j++) {
                if (encKeys[j] == encKeys[i]) revert DuplicateGuardianEncKey(i);
            }
            // Marked with the new version as we go: a second occurrence is a duplicate.
            if (_guardianOf[wallet] == version) revert DuplicateGuardian(wallet);
            _guardianOf[wallet] = version;
        }
        guardianSetVersion = version;
        _guardianWallets = wallets;
        _guardianEncKeys = encKeys;
        _guardianThreshold = threshold;
        emit GuardiansSet(version, wallets, encKeys, threshold);
    }

    /// @notice Empty the guardian set (and bump `guardianSetVersion`).
    function clearGuardians() external onlyOwner {
        uint256 version = guardianSetVersion + 1;
        guardianSetVersion = version;
        delete _guardianWallets;
        delete _guardianEncKeys;
        _guardianThreshold = 0;
        emit GuardiansCleared(version);
    }

    // ------------------------------------------------------------------ registry callbacks

    /// @inheritdoc INovaAppInterface
    function addOperator(address teeWalletAddress, uint256 appId, uint256 versionId, uint256 instanceId)
        external
        onlyKmsCallback(appId)
    {
        if (teeWalletAddress == address(0)) revert ZeroAddress();
        if (_slot[teeWalletAddress] != 0) return;
        _operators.push(teeWalletAddress);
        _slot[teeWalletAddress] = _operators.length;
        emit OperatorAdded(teeWalletAddress, appId, versionId, instanceId);
    }

    /// @inheritdoc INovaAppInterface
    function removeOperator(address teeWalletAddress, uint256 appId, uint256 versionId, uint256 instanceId)
        external
        onlyKmsCallback(appId)
    {
        uint256 slot = _slot[teeWalletAddress];
        if (slot == 0) return;
        uint256 last = _operators.length;
        if (slot != last) {
            // Move the last operator into the freed slot.
            address moved = _operators[last - 1];
            _operators[slot - 1] = moved;
            _slot[moved] = slot;
        }
        _operators.pop();
        delete _slot[teeWalletAddress];
        emit OperatorRemoved(teeWalletAddress, appId, versionId, instanceId);
    }

    // ------------------------------------------------------------------ views

    function isOperator(address wallet) external view returns (bool) {
        return _slot[wallet] != 0;
    }

    function operatorCount() external view returns (uint256) {
        return _operators.length;
    }

    /// @notice The operator at `index` (0-based; the order changes when operators are removed).
    function operatorAt(uint256 index) external view returns (address) {
        if (index >= _operators.length) revert IndexOutOfRange();
        return _operators[index];
    }

    function getOperators() external view returns (address[] memory) {
        return _operators;
    }

    /// @notice The current guardian set: empty arrays and threshold 0 when there is none
    ///         (`version` 0: never configured; otherwise cleared in that version).
    function guardians()
        external
        view
        returns (address[] memory wallets, bytes32[] memory encKeys, uint8 threshold, uint256 version)
    {
        return (_guardianWallets, _guardianEncKeys, _guardianThreshold, guardianSetVersion);
    }

    function isGuardian(address wallet) external view returns (bool) {
        uint256 version = guardianSetVersion;
        return version != 0 && _guardianOf[wallet] == version;
    }
}
