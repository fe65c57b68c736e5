// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.37;

import {TestBase} from "./TestBase.sol";
import {DevNovaAppRegistry} from "../src/DevNovaAppRegistry.sol";
import {INovaAppRegistryView} from "../src/interfaces/INovaAppRegistryView.sol";

/// DevNovaAppRegistry against shared/NOVA_APP_REGISTRY.md: ids, status transitions and who may
/// make them, code measurements, instance registration checks, zeroed unknown wallets.
/// This contract is the registry owner.
contract DevNovaAppRegistryTest is TestBase {
    bytes32 internal constant NITRO = keccak256("aws-nitro");

    DevNovaAppRegistry internal nova;
    address internal appOwner;
    address internal stranger;
    uint256 internal app;
    uint256 internal version;

    function setUp() public {
        appOwner = makeAddr("app owner");
        stranger = makeAddr("stranger");
        nova = new DevNovaAppRegistry();
        vm.warp(1_700_000_000);
        vm.startPrank(appOwner);
        app = nova.createApp(NITRO, address(0), "ipfs://app");
        version = _enroll(app, "v1");
        vm.stopPrank();
    }

    function _enroll(uint256 appId, string memory name) internal returns (uint256) {
        return nova.enrollVersion(
            appId, name, bytesOf(0, 48), bytesOf(0x11, 48), bytesOf(0x22, 48), "img", "audit", "ah", "run"
        );
    }

    function _register(address wallet) internal returns (uint256) {
        vm.prank(appOwner);
        return nova.registerInstanceDev(app, version, "https://node.example", hex"04abcd", wallet);
    }

    function _appStatus(uint256 appId) internal view returns (uint8) {
        return uint8(nova.getApp(appId).status);
    }

    // ------------------------------------------------------------------ apps

    function test_owner_isDeployer() public view {
        assertEq(nova.owner(), address(this));
    }

    function test_createApp_idsStartAtOneAndFieldsAreSet() public {
        assertEq(app, 1);
        assertEq(nova.getAppCount(), 1);
        address dapp = makeAddr("dapp");
        vm.warp(1_800_000_000);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.AppCreated(2, stranger, NITRO, dapp, "ipfs://second");
        vm.prank(stranger);
        uint256 second = nova.createApp(NITRO, dapp, "ipfs://second");
        assertEq(second, 2);
        assertEq(nova.getAppCount(), 2);

        INovaAppRegistryView.App memory a = nova.getApp(second);
        assertEq(a.appId, 2);
        assertEq(a.owner, stranger);
        assertEq(a.teeArch, NITRO);
        assertEq(a.dappContract, dapp);
        assertEq(a.metadataUri, "ipfs://second");
        assertEq(a.latestVersionId, 0);
        assertEq(a.createdAt, 1_800_000_000);
        assertEq(uint8(a.status), uint8(INovaAppRegistryView.AppStatus.ACTIVE));
        assertEq(nova.getVersionCount(second), 0);
    }

    function test_updateAppStatus_appOwnerTogglesActiveInactive() public {
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.AppStatusChanged(app, INovaAppRegistryView.AppStatus.INACTIVE, appOwner);
        vm.prank(appOwner);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
        assertEq(_appStatus(app), uint8(INovaAppRegistryView.AppStatus.INACTIVE));

        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.AppStatusChanged(app, INovaAppRegistryView.AppStatus.ACTIVE, appOwner);
        vm.prank(appOwner);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.ACTIVE);
        assertEq(_appStatus(app), uint8(INovaAppRegistryView.AppStatus.ACTIVE));
    }

    function test_updateAppStatus_appOwnerCannotRevokeOrUnrevoke() public {
        vm.prank(appOwner);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.REVOKED);

        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.REVOKED); // registry owner
        vm.prank(appOwner);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
        vm.prank(appOwner);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 2, 0));
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.ACTIVE);
    }

    function test_updateAppStatus_registryOwnerRevokesAndReinstatesAsInactive() public {
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.AppStatusChanged(app, INovaAppRegistryView.AppStatus.REVOKED, address(this));
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.REVOKED);
        assertEq(_appStatus(app), uint8(INovaAppRegistryView.AppStatus.REVOKED));

        // REVOKED -> ACTIVE is never possible, REVOKED -> INACTIVE only for the registry owner
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 2, 0));
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.ACTIVE);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.AppStatusChanged(app, INovaAppRegistryView.AppStatus.INACTIVE, address(this));
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);

        // and from INACTIVE it can revoke again; the app owner reactivates
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.REVOKED);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
        vm.prank(appOwner);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.ACTIVE);
        assertEq(_appStatus(app), uint8(INovaAppRegistryView.AppStatus.ACTIVE));
    }

    function test_updateAppStatus_registryOwnerCannotToggleActiveInactive() public {
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
    }

    function test_updateAppStatus_sameStatusAndStrangers() public {
        vm.prank(appOwner);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 0, 0));
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.ACTIVE);

        vm.startPrank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.REVOKED);
        vm.stopPrank();

        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 99));
        nova.updateAppStatus(99, INovaAppRegistryView.AppStatus.REVOKED);
    }

    // ------------------------------------------------------------------ versions

    function test_enrollVersion_codeMeasurementAndFields() public view {
        INovaAppRegistryView.AppVersion memory v = nova.getVersion(app, version);
        // keccak256(48 x 0x00 ‖ 48 x 0x11 ‖ 48 x 0x22), computed independently (Python eth_hash)
        assertEq(v.codeMeasurement, 0x7d3070e31958ad5126a3513e29079a66567801330869ca90528390b507ada1e9);
        assertEq(v.versionId, 1);
        assertEq(v.versionName, "v1");
        assertEq(v.imageUri, "img");
        assertEq(v.auditUrl, "audit");
        assertEq(v.auditHash, "ah");
        assertEq(v.githubRunId, "run");
        assertEq(uint8(v.status), uint8(INovaAppRegistryView.VersionStatus.ENROLLED));
        assertEq(v.enrolledAt, 1_700_000_000);
        assertEq(v.enrolledBy, appOwner);
    }

    function test_enrollVersion_concatenatesPcrsInOrder() public {
        bytes memory p0 = new bytes(48);
        bytes memory p1 = new bytes(48);
        bytes memory p2 = new bytes(48);
        for (uint256 i = 0; i < 48; i++) {
            p0[i] = bytes1(uint8(i));
            p1[i] = bytes1(uint8(48 + i));
            p2[i] = bytes1(uint8(96 + i));
        }
        bytes32 expected = 0x36b6c310c763efcdcd51591b27ac640ec854bf8da8e413f4cc0f4a29e2a48dbc; // keccak256(0..143)
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.VersionEnrolled(app, 2, "v2", expected, "img2");
        vm.prank(appOwner);
        uint256 v2 = nova.enrollVersion(app, "v2", p0, p1, p2, "img2", "", "", "");
        assertEq(nova.getVersion(app, v2).codeMeasurement, expected);
    }

    function test_enrollVersion_idsPerAppAndLatest() public {
        vm.prank(stranger);
        uint256 other = nova.createApp(NITRO, address(0), "");
        vm.prank(stranger);
        assertEq(_enroll(other, "o1"), 1); // per app: starts at 1 again
        vm.startPrank(appOwner);
        assertEq(_enroll(app, "v2"), 2);
        assertEq(_enroll(app, "v3"), 3);
        vm.stopPrank();
        assertEq(nova.getVersionCount(app), 3);
        assertEq(nova.getVersionCount(other), 1);
        assertEq(nova.getApp(app).latestVersionId, 3);
        assertEq(nova.getLatestVersion(app).versionName, "v3");
        assertEq(nova.getLatestVersion(other).versionName, "o1");
    }

    function test_enrollVersion_rejectsBadPcrLengths() public {
        vm.startPrank(appOwner);
        uint256[4] memory bad = [uint256(0), 32, 47, 49];
        for (uint256 i = 0; i < bad.length; i++) {
            bytes memory b = bytesOf(1, bad[i]);
            bytes memory ok = bytesOf(1, 48);
            vm.expectRevert(DevNovaAppRegistry.InvalidPcrLength.selector);
            nova.enrollVersion(app, "x", b, ok, ok, "", "", "", "");
            vm.expectRevert(DevNovaAppRegistry.InvalidPcrLength.selector);
            nova.enrollVersion(app, "x", ok, b, ok, "", "", "", "");
            vm.expectRevert(DevNovaAppRegistry.InvalidPcrLength.selector);
            nova.enrollVersion(app, "x", ok, ok, b, "", "", "", "");
        }
        vm.stopPrank();
        assertEq(nova.getVersionCount(app), 1);
    }

    function test_enrollVersion_onlyAppOwnerOfActiveApp() public {
        vm.prank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        _enroll(app, "x");
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector); // registry owner neither
        _enroll(app, "x");

        vm.startPrank(appOwner);
        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotActive.selector, app));
        _enroll(app, "x");
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 5));
        _enroll(5, "x");
        vm.stopPrank();
    }

    function test_deprecateVersion_appOwnerOnlyFromEnrolled() public {
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector); // registry owner may not
        nova.deprecateVersion(app, version);
        vm.prank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.deprecateVersion(app, version);

        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.VersionStatusChanged(app, version, INovaAppRegistryView.VersionStatus.DEPRECATED);
        vm.startPrank(appOwner);
        nova.deprecateVersion(app, version);
        assertEq(uint8(nova.getVersion(app, version).status), uint8(INovaAppRegistryView.VersionStatus.DEPRECATED));

        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 1, 1));
        nova.deprecateVersion(app, version);
        nova.revokeVersion(app, version);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 2, 1));
        nova.deprecateVersion(app, version);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotFound.selector, app, 9));
        nova.deprecateVersion(app, 9);
        vm.stopPrank();
    }

    function test_revokeVersion_byAppOwnerOrRegistryOwner() public {
        vm.prank(appOwner);
        uint256 v2 = _enroll(app, "v2");

        vm.prank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.revokeVersion(app, version);

        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.VersionStatusChanged(app, version, INovaAppRegistryView.VersionStatus.REVOKED);
        nova.revokeVersion(app, version); // registry owner, from ENROLLED
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 2, 2));
        nova.revokeVersion(app, version);

        vm.startPrank(appOwner);
        nova.deprecateVersion(app, v2);
        nova.revokeVersion(app, v2); // app owner, from DEPRECATED
        vm.stopPrank();
        assertEq(uint8(nova.getVersion(app, v2).status), uint8(INovaAppRegistryView.VersionStatus.REVOKED));
    }

    // ------------------------------------------------------------------ instances

    function test_registerInstanceDev_fieldsEventsAndLookups() public {
        address wallet = makeAddr("tee wallet");
        vm.warp(1_750_000_000);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.InstanceRegistered(1, app, version, wallet, "https://node.example", true);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.InstanceWalletBound(wallet, 1, app);
        uint256 id = _register(wallet);
        assertEq(id, 1);

        INovaAppRegistryView.RuntimeInstance memory inst = nova.getInstance(id);
        assertEq(inst.instanceId, 1);
        assertEq(inst.appId, app);
        assertEq(inst.versionId, version);
        assertEq(inst.operator, appOwner);
        assertEq(inst.instanceUrl, "https://node.example");
        assertEq(inst.teePubkey, hex"04abcd");
        assertEq(inst.teeWalletAddress, wallet);
        assertTrue(inst.zkVerified);
        assertEq(uint8(inst.status), uint8(INovaAppRegistryView.InstanceStatus.ACTIVE));
        assertEq(inst.registeredAt, 1_750_000_000);
        assertEq(keccak256(abi.encode(nova.getInstanceByWallet(wallet))), keccak256(abi.encode(inst)));

        uint256 id2 = _register(makeAddr("second"));
        assertEq(id2, 2);
        uint256[] memory ids = new uint256[](2);
        ids[0] = 1;
        ids[1] = 2;
        assertEq(nova.getInstancesForVersion(app, version), ids);
    }

    function test_registerInstanceDev_byRegistryOwner_operatorIsCaller() public {
        address wallet = makeAddr("w");
        uint256 id = nova.registerInstanceDev(app, version, "http://10.0.0.1:7400", hex"01", wallet);
        assertEq(nova.getInstance(id).operator, address(this));
    }

    function test_registerInstanceDev_checks() public {
        address wallet = makeAddr("w");
        vm.startPrank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.registerInstanceDev(app, version, "https://n", hex"01", wallet);
        vm.stopPrank();

        vm.startPrank(appOwner);
        vm.expectRevert(DevNovaAppRegistry.ZeroAddress.selector);
        nova.registerInstanceDev(app, version, "https://n", hex"01", address(0));
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 42));
        nova.registerInstanceDev(42, version, "https://n", hex"01", wallet);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotFound.selector, app, 42));
        nova.registerInstanceDev(app, 42, "https://n", hex"01", wallet);

        string[6] memory badUrls = ["", "ftp://n", "http://", "https://", "HTTPS://n", "http:/n"];
        for (uint256 i = 0; i < badUrls.length; i++) {
            vm.expectRevert(DevNovaAppRegistry.InvalidInstanceUrl.selector);
            nova.registerInstanceDev(app, version, badUrls[i], hex"01", wallet);
        }
        vm.expectRevert(DevNovaAppRegistry.InvalidTeePubkey.selector);
        nova.registerInstanceDev(app, version, "https://n", "", wallet);
        vm.expectRevert(DevNovaAppRegistry.InvalidTeePubkey.selector);
        nova.registerInstanceDev(app, version, "https://n", bytesOf(4, 129), wallet);

        // the bounds themselves are fine
        nova.registerInstanceDev(app, version, "http://n", bytesOf(4, 1), wallet);
        nova.registerInstanceDev(app, version, "https://n", bytesOf(4, 128), makeAddr("w2"));
        vm.stopPrank();
        assertEq(nova.getInstance(2).teePubkey.length, 128);
    }

    function test_registerInstance_requiresActiveAppAndEnrolledVersion() public {
        address wallet = makeAddr("w");
        vm.startPrank(appOwner);
        uint256 v2 = _enroll(app, "v2");
        uint256 v3 = _enroll(app, "v3");
        nova.deprecateVersion(app, v2);
        nova.revokeVersion(app, v3);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotEnrolled.selector, app, v2));
        nova.registerInstanceDev(app, v2, "https://n", hex"01", wallet);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotEnrolled.selector, app, v3));
        nova.registerInstanceDev(app, v3, "https://n", hex"01", wallet);

        nova.updateAppStatus(app, INovaAppRegistryView.AppStatus.INACTIVE);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotActive.selector, app));
        nova.registerInstanceDev(app, version, "https://n", hex"01", wallet);
        vm.stopPrank();
    }

    function test_oneInstancePerWallet_acrossAppsAndAfterStop() public {
        address wallet = makeAddr("w");
        uint256 id = _register(wallet);

        vm.prank(appOwner);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.WalletAlreadyRegistered.selector, wallet, id));
        nova.registerInstanceDev(app, version, "https://other", hex"01", wallet);

        vm.startPrank(stranger);
        uint256 other = nova.createApp(NITRO, address(0), "");
        uint256 ov = _enroll(other, "o1");
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.WalletAlreadyRegistered.selector, wallet, id));
        nova.registerInstanceDev(other, ov, "https://other", hex"01", wallet);
        vm.stopPrank();

        vm.prank(appOwner);
        nova.updateInstanceStatus(id, INovaAppRegistryView.InstanceStatus.STOPPED);
        vm.prank(appOwner);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.WalletAlreadyRegistered.selector, wallet, id));
        nova.registerInstanceDev(app, version, "https://again", hex"01", wallet);
        assertEq(uint8(nova.getInstanceByWallet(wallet).status), uint8(INovaAppRegistryView.InstanceStatus.STOPPED));
    }

    function test_registerInstanceWithoutProof_isNotZkVerified() public {
        address wallet = makeAddr("unattested");
        bytes32 cm = nova.getVersion(app, version).codeMeasurement;
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.InstanceRegistered(1, app, version, wallet, "https://u", false);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.InstanceWalletBound(wallet, 1, app);
        vm.prank(appOwner);
        uint256 id = nova.registerInstanceWithoutProof(app, version, "https://u", hex"05", wallet, cm);
        INovaAppRegistryView.RuntimeInstance memory inst = nova.getInstanceByWallet(wallet);
        assertEq(inst.instanceId, id);
        assertFalse(inst.zkVerified);
        assertEq(uint8(inst.status), uint8(INovaAppRegistryView.InstanceStatus.ACTIVE));
    }

    function test_registerInstanceWithoutProof_checks() public {
        address wallet = makeAddr("unattested");
        bytes32 cm = nova.getVersion(app, version).codeMeasurement;
        vm.prank(appOwner);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.CodeMeasurementMismatch.selector, cm, bytes32(0)));
        nova.registerInstanceWithoutProof(app, version, "https://u", hex"05", wallet, bytes32(0));
        vm.prank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.registerInstanceWithoutProof(app, version, "https://u", hex"05", wallet, cm);
        vm.prank(appOwner);
        vm.expectRevert(DevNovaAppRegistry.InvalidInstanceUrl.selector);
        nova.registerInstanceWithoutProof(app, version, "ws://u", hex"05", wallet, cm);
        // registry owner may
        uint256 id = nova.registerInstanceWithoutProof(app, version, "https://u", hex"05", wallet, cm);
        assertEq(nova.getInstance(id).operator, address(this));
    }

    function test_getInstanceByWallet_unknownIsZeroed() public {
        _register(makeAddr("known"));
        INovaAppRegistryView.RuntimeInstance memory inst = nova.getInstanceByWallet(makeAddr("unknown"));
        assertEq(inst.instanceId, 0);
        assertEq(inst.appId, 0);
        assertEq(inst.versionId, 0);
        assertEq(inst.operator, address(0));
        assertEq(inst.instanceUrl, "");
        assertEq(inst.teePubkey, "");
        assertEq(inst.teeWalletAddress, address(0));
        assertFalse(inst.zkVerified);
        assertEq(uint8(inst.status), 0);
        assertEq(inst.registeredAt, 0);
        assertEq(nova.getInstanceByWallet(address(0)).instanceId, 0);
    }

    function test_updateInstanceStatus_transitionsAndEvents() public {
        uint256 a = _register(makeAddr("a"));
        uint256 b = _register(makeAddr("b"));

        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.InstanceStatusChanged(a, INovaAppRegistryView.InstanceStatus.STOPPED);
        vm.prank(appOwner);
        nova.updateInstanceStatus(a, INovaAppRegistryView.InstanceStatus.STOPPED);
        assertEq(uint8(nova.getInstance(a).status), uint8(INovaAppRegistryView.InstanceStatus.STOPPED));

        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.InstanceStatusChanged(b, INovaAppRegistryView.InstanceStatus.FAILED);
        nova.updateInstanceStatus(b, INovaAppRegistryView.InstanceStatus.FAILED); // registry owner
        assertEq(uint8(nova.getInstance(b).status), uint8(INovaAppRegistryView.InstanceStatus.FAILED));

        // only out of ACTIVE, never back, never ACTIVE -> ACTIVE
        vm.startPrank(appOwner);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 1, 0));
        nova.updateInstanceStatus(a, INovaAppRegistryView.InstanceStatus.ACTIVE);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 1, 2));
        nova.updateInstanceStatus(a, INovaAppRegistryView.InstanceStatus.FAILED);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 2, 1));
        nova.updateInstanceStatus(b, INovaAppRegistryView.InstanceStatus.STOPPED);
        uint256 c = nova.registerInstanceDev(app, version, "https://c", hex"01", makeAddr("c"));
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InvalidStatusTransition.selector, 0, 0));
        nova.updateInstanceStatus(c, INovaAppRegistryView.InstanceStatus.ACTIVE);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InstanceNotFound.selector, 77));
        nova.updateInstanceStatus(77, INovaAppRegistryView.InstanceStatus.STOPPED);
        vm.stopPrank();
    }

    function test_updateInstanceStatus_permissions() public {
        // registered by the registry owner: operator = registry owner; the app owner may also stop it
        uint256 byRegistry = nova.registerInstanceDev(app, version, "https://r", hex"01", makeAddr("r"));
        uint256 byApp = _register(makeAddr("p"));

        vm.prank(stranger);
        vm.expectRevert(DevNovaAppRegistry.NotAuthorized.selector);
        nova.updateInstanceStatus(byApp, INovaAppRegistryView.InstanceStatus.STOPPED);

        vm.prank(appOwner);
        nova.updateInstanceStatus(byRegistry, INovaAppRegistryView.InstanceStatus.STOPPED);
        nova.updateInstanceStatus(byApp, INovaAppRegistryView.InstanceStatus.STOPPED); // operator / registry owner
        assertEq(uint8(nova.getInstance(byApp).status), uint8(INovaAppRegistryView.InstanceStatus.STOPPED));
    }

    // ------------------------------------------------------------------ getters for unknown ids

    function test_getters_revertForUnknownIds() public {
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 0));
        nova.getApp(0);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 2));
        nova.getApp(2);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotFound.selector, app, 0));
        nova.getVersion(app, 0);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotFound.selector, app, 2));
        nova.getVersion(app, 2);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 3));
        nova.getVersion(3, 1);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InstanceNotFound.selector, 0));
        nova.getInstance(0);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.InstanceNotFound.selector, 1));
        nova.getInstance(1);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotFound.selector, app, 5));
        nova.getInstancesForVersion(app, 5);
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.AppNotFound.selector, 9));
        nova.getVersionCount(9);

        vm.prank(stranger);
        uint256 empty = nova.createApp(NITRO, address(0), "");
        vm.expectRevert(abi.encodeWithSelector(DevNovaAppRegistry.VersionNotFound.selector, empty, 0));
        nova.getLatestVersion(empty);
        assertEq(nova.getInstancesForVersion(app, version).length, 0);
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_instanceUrlPrefix(uint8 kind, string calldata rest) public {
        string memory url =
            kind % 3 == 0 ? string.concat("http://", rest) : kind % 3 == 1 ? string.concat("https://", rest) : rest;
        bytes memory b = bytes(url);
        bool http = b.length > 7 && keccak256(_slice(b, 7)) == keccak256("http://");
        bool https = b.length > 8 && keccak256(_slice(b, 8)) == keccak256("https://");
        vm.prank(appOwner);
        if (!http && !https) vm.expectRevert(DevNovaAppRegistry.InvalidInstanceUrl.selector);
        nova.registerInstanceDev(app, version, url, hex"01", makeAddr("fuzz"));
    }

    function testFuzz_codeMeasurement(bytes32 a, bytes16 b, bytes32 c, bytes16 d, bytes32 e, bytes16 f) public {
        bytes memory p0 = abi.encodePacked(a, b);
        bytes memory p1 = abi.encodePacked(c, d);
        bytes memory p2 = abi.encodePacked(e, f);
        vm.prank(appOwner);
        uint256 v = nova.enrollVersion(app, "f", p0, p1, p2, "", "", "", "");
        assertEq(nova.getVersion(app, v).codeMeasurement, keccak256(abi.encodePacked(a, b, c, d, e, f)));
    }

    function _slice(bytes memory b, uint256 n) internal pure returns (bytes memory out) {
        out = new bytes(n);
        for (uint256 i = 0; i < n; i++) {
            out[i] = b[i];
        }
    }
}
