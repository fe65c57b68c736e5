// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.37;

/// @title INovaAppInterface
/// @notice The callbacks NovaAppRegistry makes on an app's `dappContract` when an instance of
///         that app is registered (`addOperator`) or leaves ACTIVE (`removeOperator`).
/// @dev The registry calls these with a gas limit inside try/catch: a revert only makes it emit
///      `OperatorCallbackFailed`, it never undoes the registration or the status change.
interface INovaAppInterface {
    /// @notice A new instance of `appId` with TEE wallet `teeWalletAddress` is ACTIVE.
    function addOperator(address teeWalletAddress, uint256 appId, uint256 versionId, uint256 instanceId) external;

    /// @notice The instance with TEE wallet `teeWalletAddress` left ACTIVE (STOPPED or FAILED).
    function removeOperator(address teeWalletAddress, uint256 appId, uint256 versionId, uint256 instanceId) external;
}
