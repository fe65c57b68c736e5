// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.37;

/// @title INovaAppRegistryView
/// @notice The part of the Nova platform's NovaAppRegistry (a UUPS proxy) that novakms reads:
///         enums, structs (field order is ABI order), views and events, exactly as in
///         shared/NOVA_APP_REGISTRY.md. DevNovaAppRegistry implements it for tests and local
///         chains.
interface INovaAppRegistryView {
    enum AppStatus {
        ACTIVE,
        INACTIVE,
        REVOKED
    }

    enum VersionStatus {
        ENROLLED,
        DEPRECATED,
        REVOKED
    }

    enum InstanceStatus {
        ACTIVE,
        STOPPED,
        FAILED
    }

    struct App {
        uint256 appId;
        address owner;
        bytes32 teeArch;
        address dappContract;
        string metadataUri;
        uint256 latestVersionId;
        uint256 createdAt;
        AppStatus status;
    }

    struct AppVersion {
        uint256 versionId;
        string versionName;
        bytes32 codeMeasurement;
        string imageUri;
        string auditUrl;
        string auditHash;
        string githubRunId;
        VersionStatus status;
        uint256 enrolledAt;
        address enrolledBy;
    }

    struct RuntimeInstance {
        uint256 instanceId;
        uint256 appId;
        uint256 versionId;
        address operator;
        string instanceUrl;
        bytes teePubkey;
        address teeWalletAddress;
        bool zkVerified;
        InstanceStatus status;
        uint256 registeredAt;
    }

    event AppCreated(
        uint256 indexed appId, address indexed owner, bytes32 teeArch, address dappContract, string metadataUri
    );
    event AppStatusChanged(uint256 indexed appId, AppStatus newStatus, address indexed updatedBy);
    event VersionEnrolled(
        uint256 indexed appId, uint256 indexed versionId, string versionName, bytes32 codeMeasurement, string imageUri
    );
    event VersionStatusChanged(uint256 indexed appId, uint256 indexed versionId, VersionStatus newStatus);
    event InstanceRegistered(
        uint256 indexed instanceId,
        uint256 indexed appId,
        uint256 indexed versionId,
        address teeWalletAddress,
        string instanceUrl,
        bool zkVerified
    );
    event InstanceWalletBound(address indexed teeWalletAddress, uint256 indexed instanceId, uint256 indexed appId);
    event InstanceStatusChanged(uint256 indexed instanceId, InstanceStatus newStatus);
    event OperatorCallbackSuccess(uint256 indexed appId, address indexed dappContract, address teeWalletAddress);
    event OperatorCallbackFailed(uint256 indexed appId, address indexed dappContract, string reason);

    function getApp(uint256 appId) external view returns (App memory);

    function getVersion(uint256 appId, uint256 versionId) external view returns (AppVersion memory);

    function getInstance(uint256 instanceId) external view returns (RuntimeInstance memory);

    /// @notice A zeroed RuntimeInstance (instanceId 0) for an unknown wallet, not a revert.
    function getInstanceByWallet(address teeWalletAddress) external view returns (RuntimeInstance memory);

    function getInstancesForVersion(uint256 appId, uint256 versionId) external view returns (uint256[] memory);

    function getLatestVersion(uint256 appId) external view returns (AppVersion memory);

    function getAppCount() external view returns (uint256);

    function getVersionCount(uint256 appId) external view returns (uint256);
}
