// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.37;

import {INovaAppInterface} from "./interfaces/INovaAppInterface.sol";
import {INovaAppRegistryView} from "./interfaces/INovaAppRegistryView.sol";

/// @title DevNovaAppRegistry — FOR TESTS AND LOCAL DEVELOPMENT CHAINS ONLY
/// @notice A stand-in for the Nova platform's NovaAppRegistry with the same enums, structs,
///         views, events, mutations and status rules (shared/NOVA_APP_REGISTRY.md), plus
///         `registerInstanceDev`, which registers a zk-verified instance WITHOUT any proof.
/// @dev Never deploy this to a shared network: whoever owns an app can make any wallet look
///      like an attested TEE of it. Ids start at 1 (apps and instances globally, versions per
///      app). The getters revert for unknown apps, versions and instances, except
///      `getInstanceByWallet`, which returns a zeroed RuntimeInstance for an unknown wallet.
contract DevNovaAppRegistry is INovaAppRegistryView {
    // ------------------------------------------------------------------ errors

    error NotAuthorized();
    error AppNotFound(uint256 appId);
    error VersionNotFound(uint256 appId, uint256 versionId);
    error InstanceNotFound(uint256 instanceId);
    error AppNotActive(uint256 appId);
    error VersionNotEnrolled(uint256 appId, uint256 versionId);
    error InvalidStatusTransition(uint8 from, uint8 to);
    error InvalidPcrLength();
    error InvalidInstanceUrl();
    error InvalidTeePubkey();
    error ZeroAddress();
    error WalletAlreadyRegistered(address teeWalletAddress, uint256 instanceId);
    error CodeMeasurementMismatch(bytes32 expected, bytes32 actual);
    error InsufficientGasForCallback();

    // ------------------------------------------------------------------ constants and state

    /// @notice Gas given to each `addOperator` / `removeOperator` callback.
    uint256 public constant CALLBACK_GAS_LIMIT = 500_000;
    uint256 private constant PCR_LENGTH = 48;
    uint256 private constant MAX_TEE_PUBKEY_LENGTH = 128;

    /// @notice The registry owner (the deployer): may revoke apps and versions and register or
    ///         stop instances of any app.
    address public immutable owner;

    uint256 private _appCount;
    uint256 private _instanceCount;
    mapping(uint256 appId => App) private _apps;
    mapping(uint256 appId => mapping(uint256 versionId => AppVersion)) private _versions;
    mapping(uint256 instanceId => RuntimeInstance) private _instances;
    mapping(address wallet => uint256 instanceId) private _instanceByWallet;
    mapping(uint256 appId => mapping(uint256 versionId => uint256[])) private _versionInstances;

    constructor() {
        owner = msg.sender;
    }

    // ------------------------------------------------------------------ apps

    /// @notice Create an ACTIVE app owned by the caller.
    /// @param dappContract receives the operator callbacks; zero for none.
    function createApp(bytes32 teeArch, address dappContract, string calldata metadataUri)
        external
        returns (uint256 appId)
    {
        appId = ++_appCount;
        App storage app = _apps[appId];
        app.appId = appId;
        app.owner = msg.sender;
        app.teeArch = teeArch;
        app.dappContract = dappContract;
        app.metadataUri = metadataUri;
        app.createdAt = block.timestamp;
        app.status = AppStatus.ACTIVE;
        emit AppCreated(appId, msg.sender, teeArch, dappContract, metadataUri);
    }

    /// @notice App owner: ACTIVE <-> INACTIVE. Registry owner: ACTIVE/INACTIVE -> REVOKED and
    ///         REVOKED -> INACTIVE. Anything else (including no change) reverts.
    function updateAppStatus(uint256 appId, AppStatus newStatus) external {
        App storage app = _app(appId);
        AppStatus current = app.status;
        bool byAppOwner = msg.sender == app.owner;
        bool byRegistryOwner = msg.sender == owner;
        if (!byAppOwner && !byRegistryOwner) revert NotAuthorized();

        bool allowed;
        if (current == AppStatus.ACTIVE && newStatus == AppStatus.INACTIVE) allowed = byAppOwner;
        else if (current == AppStatus.INACTIVE && newStatus == AppStatus.ACTIVE) allowed = byAppOwner;
        else if (current != AppStatus.REVOKED && newStatus == AppStatus.REVOKED) allowed = byRegistryOwner;
        else if (current == AppStatus.REVOKED && newStatus == AppStatus.INACTIVE) allowed = byRegistryOwner;
        else revert InvalidStatusTransition(uint8(current), uint8(newStatus));
        if (!allowed) revert NotAuthorized();

        app.status = newStatus;
        emit AppStatusChanged(appId, newStatus, msg.sender);
    }

    // ------------------------------------------------------------------ versions

    /// @notice Enroll a version of an ACTIVE app (app owner only).
    ///         codeMeasurement = keccak256(pcr0 ‖ pcr1 ‖ pcr2), each PCR exactly 48 bytes.
    function enrollVersion(
        uint256 appId,
        string memory versionName,
        bytes memory pcr0,
        bytes memory pcr1,
        bytes memory pcr2,
        string memory imageUri,
        string memory auditUrl,
        string memory auditHash,
        string memory githubRunId
    ) external returns (uint256 versionId) {
        App storage app = _app(appId);
        if (msg.sender != app.owner) revert NotAuthorized();
        if (app.status != AppStatus.ACTIVE) revert AppNotActive(appId);
        if (pcr0.length != PCR_LENGTH || pcr1.length != PCR_LENGTH || pcr2.length != PCR_LENGTH) {
            revert InvalidPcrLength();
        }
        bytes32 codeMeasurement = keccak256(abi.encodePacked(pcr0, pcr1, pcr2));

        versionId = ++app.latestVersionId;
        AppVersion storage version = _versions[appId][versionId];
        version.versionId = versionId;
        version.versionName = versionName;
        version.codeMeasurement = codeMeasurement;
        version.imageUri = imageUri;
        version.auditUrl = auditUrl;
        version.auditHash = auditHash;
        version.githubRunId = githubRunId;
        version.status = VersionStatus.ENROLLED;
        version.enrolledAt = block.timestamp;
        version.enrolledBy = msg.sender;
        emit VersionEnrolled(appId, versionId, versionName, codeMeasurement, imageUri);
    }

    /// @notice ENROLLED -> DEPRECATED (app owner only): existing instances stay valid, new ones
    ///         cannot register.
    function deprecateVersion(uint256 appId, uint256 versionId) external {
        App storage app = _app(appId);
        if (msg.sender != app.owner) revert NotAuthorized();
        AppVersion storage version = _version(appId, versionId);
        if (version.status != VersionStatus.ENROLLED) {
            revert InvalidStatusTransition(uint8(version.status), uint8(VersionStatus.DEPRECATED));
        }
        version.status = VersionStatus.DEPRECATED;
        emit VersionStatusChanged(appId, versionId, VersionStatus.DEPRECATED);
    }

    /// @notice ENROLLED/DEPRECATED -> REVOKED (app owner or registry owner).
    function revokeVersion(uint256 appId, uint256 versionId) external {
        App storage app = _app(appId);
        if (msg.sender != app.owner && msg.sender != owner) revert NotAuthorized();
        AppVersion storage version = _version(appId, versionId);
        if (version.status == VersionStatus.REVOKED) {
            revert InvalidStatusTransition(uint8(VersionStatus.REVOKED), uint8(VersionStatus.REVOKED));
        }
        version.status = VersionStatus.REVOKED;
        emit VersionStatusChanged(appId, versionId, VersionStatus.REVOKED);
    }

    // ------------------------------------------------------------------ instances

    /// @notice DEVELOPMENT ONLY: register an ACTIVE, zkVerified instance without any proof
    ///         (app owner or registry owner). Same checks and callbacks as the platform's
    ///         proof-checked `registerInstance`.
    function registerInstanceDev(
        uint256 appId,
        uint256 versionId,
        string calldata instanceUrl,
        bytes calldata teePubkey,
        address teeWalletAddress
    ) external returns (uint256 instanceId) {
        return _registerInstance(appId, versionId, instanceUrl, teePubkey, teeWalletAddress, true);
    }

    /// @notice The platform's unattested registration (app owner or registry owner):
    ///         `codeMeasurement` must equal the version's; the instance gets zkVerified=false,
    ///         so the KMS rejects it. The operator callback is still made, as on the platform.
    function registerInstanceWithoutProof(
        uint256 appId,
        uint256 versionId,
        string calldata instanceUrl,
        bytes calldata teePubkey,
        address teeWalletAddress,
        bytes32 codeMeasurement
    ) external returns (uint256 instanceId) {
        bytes32 expected = _version(appId, versionId).codeMeasurement;
        if (codeMeasurement != expected) revert CodeMeasurementMismatch(expected, codeMeasurement);
        return _registerInstance(appId, versionId, instanceUrl, teePubkey, teeWalletAddress, false);
    }

    /// @notice ACTIVE -> STOPPED or FAILED (instance operator, app owner or registry owner);
    ///         then `removeOperator` on the app's dappContract. The wallet stays bound to the
    ///         instance (one instance per wallet, ever).
    function updateInstanceStatus(uint256 instanceId, InstanceStatus newStatus) external {
        RuntimeInstance storage inst = _instance(instanceId);
        App storage app = _apps[inst.appId];
        if (msg.sender != inst.operator && msg.sender != app.owner && msg.sender != owner) {
            revert NotAuthorized();
        }
        if (inst.status != InstanceStatus.ACTIVE || newStatus == InstanceStatus.ACTIVE) {
            revert InvalidStatusTransition(uint8(inst.status), uint8(newStatus));
        }
        inst.status = newStatus;
        emit InstanceStatusChanged(instanceId, newStatus);
        _callback(app, false, inst.teeWalletAddress, inst.appId, inst.versionId, instanceId);
    }

    // ------------------------------------------------------------------ views

    function getApp(uint256 appId) external view returns (App memory) {
        return _app(appId);
    }

    function getVersion(uint256 appId, uint256 versionId) external view returns (AppVersion memory) {
        _app(appId);
        return _version(appId, versionId);
    }

    function getInstance(uint256 instanceId) external view returns (RuntimeInstance memory) {
        return _instance(instanceId);
    }

    function getInstanceByWallet(address teeWalletAddress) external view returns (RuntimeInstance memory) {
        return _instances[_instanceByWallet[teeWalletAddress]]; // id 0 is never used: zeroed
    }

    /// @notice Every instance ever registered for the version, in registration order
    ///         (whatever their status now).
    function getInstancesForVersion(uint256 appId, uint256 versionId) external view returns (uint256[] memory) {
        _app(appId);
        _version(appId, versionId);
        return _versionInstances[appId][versionId];
    }

    /// @notice The most recently enrolled version (reverts if the app has none).
    function getLatestVersion(uint256 appId) external view returns (AppVersion memory) {
        return _version(appId, _app(appId).latestVersionId);
    }

    function getAppCount() external view returns (uint256) {
        return _appCount;
    }

    function getVersionCount(uint256 appId) external view returns (uint256) {
        return _app(appId).latestVersionId;
    }

    // ------------------------------------------------------------------ internals

    function _app(uint256 appId) private view returns (App storage app) {
        app = _apps[appId];
        if (app.appId == 0) revert AppNotFound(appId);
    }

    function _version(uint256 appId, uint256 versionId) private view returns (AppVersion storage version) {
        version = _versions[appId][versionId];
        if (version.versionId == 0) revert VersionNotFound(appId, versionId);
    }

    function _instance(uint256 instanceId) private view returns (RuntimeInstance storage inst) {
        inst = _instances[instanceId];
        if (inst.instanceId == 0) revert InstanceNotFound(instanceId);
    }

    function _registerInstance(
        uint256 appId,
        uint256 versionId,
        string calldata instanceUrl,
        bytes calldata teePubkey,
        address teeWalletAddress,
        bool zkVerified
    ) private returns (uint256 instanceId) {
        App storage app = _app(appId);
        if (msg.sender != app.owner && msg.sender != owner) revert NotAuthorized();
        if (app.status != AppStatus.ACTIVE) revert AppNotActive(appId);
        if (_version(appId, versionId).status != VersionStatus.ENROLLED) revert VersionNotEnrolled(appId, versionId);
        if (teeWalletAddress == address(0)) revert ZeroAddress();
        uint256 existing = _instanceByWallet[teeWalletAddress];
        if (existing != 0) revert WalletAlreadyRegistered(teeWalletAddress, existing);
        if (!_isHttpUrl(bytes(instanceUrl))) revert InvalidInstanceUrl();
        if (teePubkey.length == 0 || teePubkey.length > MAX_TEE_PUBKEY_LENGTH) revert InvalidTeePubkey();

        instanceId = ++_instanceCount;
        RuntimeInstance storage inst = _instances[instanceId];
        inst.instanceId = instanceId;
        inst.appId = appId;
        inst.versionId = versionId;
        inst.operator = msg.sender;
        inst.instanceUrl = instanceUrl;
        inst.teePubkey = teePubkey;
        inst.teeWalletAddress = teeWalletAddress;
        inst.zkVerified = zkVerified;
        inst.status = InstanceStatus.ACTIVE;
        inst.registeredAt = block.timestamp;
        _instanceByWallet[teeWalletAddress] = instanceId;
        _versionInstances[appId][versionId].push(instanceId);

        emit InstanceRegistered(instanceId, appId, versionId, teeWalletAddress, instanceUrl, zkVerified);
        emit InstanceWalletBound(teeWalletAddress, instanceId, appId);
        _callback(app, true, teeWalletAddress, appId, versionId, instanceId);
    }

    /// @dev addOperator / removeOperator on the app's dappContract with CALLBACK_GAS_LIMIT; a
    ///      failure only emits OperatorCallbackFailed. The transaction itself reverts when it
    ///      cannot give the callback its full gas, so a caller cannot make the callback fail by
    ///      sending too little gas.
    function _callback(
        App storage app,
        bool add,
        address teeWalletAddress,
        uint256 appId,
        uint256 versionId,
        uint256 instanceId
    ) private {
        address dapp = app.dappContract;
        if (dapp == address(0)) return;
        if (dapp.code.length == 0) {
            // A high-level call would revert before try/catch could catch it.
            emit OperatorCallbackFailed(appId, dapp, "dappContract has no code");
            return;
        }
        if (gasleft() < (CALLBACK_GAS_LIMIT * 64) / 63 + 20_000) revert InsufficientGasForCallback();
        INovaAppInterface target = INovaAppInterface(dapp);
        if (add) {
            try target.addOperator{gas: CALLBACK_GAS_LIMIT}(teeWalletAddress, appId, versionId, instanceId) {
                emit OperatorCallbackSuccess(appId, dapp, teeWalletAddress);
            } catch Error(string memory reason) {
                emit OperatorCallbackFailed(appId, dapp, reason);
            } catch (bytes memory data) {
                emit OperatorCallbackFailed(appId, dapp, _revertDataReason(data));
            }
        } else {
            try target.removeOperator{gas: CALLBACK_GAS_LIMIT}(teeWalletAddress, appId, versionId, instanceId) {
                emit OperatorCallbackSuccess(appId, dapp, teeWalletAddress);
            } catch Error(string memory reason) {
                emit OperatorCallbackFailed(appId, dapp, reason);
            } catch (bytes memory data) {
                emit OperatorCallbackFailed(appId, dapp, _revertDataReason(data));
            }
        }
    }

    /// @dev Revert data other than Error(string), as "0x" + hex of at most its first 68 bytes
    ///      (a custom error's selector and first two words), or "empty revert data".
    function _revertDataReason(bytes memory data) private pure returns (string memory) {
        if (data.length == 0) return "empty revert data";
        uint256 n = data.length < 68 ? data.length : 68;
        bytes memory out = new bytes(2 + 2 * n);
        out[0] = "0";
        out[1] = "x";
        bytes16 digits = "0123456789abcdef";
        for (uint256 i = 0; i < n; i++) {
            uint8 b = uint8(data[i]);
            out[2 + 2 * i] = digits[b >> 4];
            out[3 + 2 * i] = digits[b & 0x0f];
        }
        return string(out);
    }

    function _isHttpUrl(bytes calldata url) private pure returns (bool) {
        return _hasPrefix(url, "http://") || _hasPrefix(url, "https://");
    }

    function _hasPrefix(bytes calldata s, bytes memory prefix) private pure returns (bool) {
        if (s.length <= prefix.length) return false;
        for (uint256 i = 0; i < prefix.length; i++) {
            if (s[i] != prefix[i]) return false;
        }
        return true;
    }
}
