// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.37;

import {TestBase} from "./TestBase.sol";
import {KMSRegistry} from "../src/KMSRegistry.sol";
import {DevNovaAppRegistry} from "../src/DevNovaAppRegistry.sol";
import {INovaAppInterface} from "../src/interfaces/INovaAppInterface.sol";
import {INovaAppRegistryView} from "../src/interfaces/INovaAppRegistryView.sol";

/// Unit tests: every function, revert and event of KMSRegistry, with this contract as owner and
/// `registry` standing in for NovaAppRegistry.
contract KMSRegistryTest is TestBase {
    uint256 internal constant KMS_APP = 7;

    KMSRegistry internal kms;
    address internal registry;
    address internal stranger;
    address internal op1;
    address internal op2;
    address internal op3;

    function setUp() public {
        registry = makeAddr("registry");
        stranger = makeAddr("stranger");
        op1 = makeAddr("op1");
        op2 = makeAddr("op2");
        op3 = makeAddr("op3");
        kms = new KMSRegistry(registry);
        kms.setKmsAppId(KMS_APP);
    }

    function _add(address wallet) internal {
        vm.prank(registry);
        kms.addOperator(wallet, KMS_APP, 1, 1);
    }

    function _remove(address wallet) internal {
        vm.prank(registry);
        kms.removeOperator(wallet, KMS_APP, 1, 1);
    }

    // ------------------------------------------------------------------ constructor

    function test_constructor_setsOwnerAndRegistry() public {
        vm.prank(stranger);
        vm.expectEmit();
        emit KMSRegistry.NovaAppRegistrySet(registry);
        KMSRegistry fresh = new KMSRegistry(registry);
        assertEq(fresh.owner(), stranger);
        assertEq(fresh.novaAppRegistry(), registry);
        assertEq(fresh.kmsAppId(), 0);
        assertEq(fresh.masterSecretHash(), bytes32(0));
        assertEq(fresh.operatorCount(), 0);
        assertEq(fresh.getOperators().length, 0);
    }

    function test_constructor_rejectsZeroRegistry() public {
        vm.expectRevert(KMSRegistry.ZeroAddress.selector);
        new KMSRegistry(address(0));
    }

    // ------------------------------------------------------------------ setKmsAppId

    function test_setKmsAppId_setsOnceAndEmits() public {
        KMSRegistry fresh = new KMSRegistry(registry);
        vm.expectEmit(address(fresh));
        emit KMSRegistry.KmsAppIdSet(42);
        fresh.setKmsAppId(42);
        assertEq(fresh.kmsAppId(), 42);

        vm.expectRevert(KMSRegistry.KmsAppIdAlreadySet.selector);
        fresh.setKmsAppId(43);
        vm.expectRevert(KMSRegistry.KmsAppIdAlreadySet.selector);
        fresh.setKmsAppId(42);
        assertEq(fresh.kmsAppId(), 42);
    }

    function test_setKmsAppId_rejectsZero() public {
        KMSRegistry fresh = new KMSRegistry(registry);
        vm.expectRevert(KMSRegistry.ZeroAppId.selector);
        fresh.setKmsAppId(0);
        assertEq(fresh.kmsAppId(), 0);
    }

    function test_setKmsAppId_onlyOwner() public {
        KMSRegistry fresh = new KMSRegistry(registry);
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        fresh.setKmsAppId(1);
        // not even the registry
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        fresh.setKmsAppId(1);
    }

    // ------------------------------------------------------------------ setNovaAppRegistry

    function test_setNovaAppRegistry_changesCallerAndEmits() public {
        address next = makeAddr("next registry");
        vm.expectEmit(address(kms));
        emit KMSRegistry.NovaAppRegistrySet(next);
        kms.setNovaAppRegistry(next);
        assertEq(kms.novaAppRegistry(), next);

        // the old registry lost its rights, the new one has them
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.addOperator(op1, KMS_APP, 1, 1);
        vm.prank(next);
        kms.addOperator(op1, KMS_APP, 1, 1);
        assertTrue(kms.isOperator(op1));
    }

    function test_setNovaAppRegistry_rejectsZero() public {
        vm.expectRevert(KMSRegistry.ZeroAddress.selector);
        kms.setNovaAppRegistry(address(0));
        assertEq(kms.novaAppRegistry(), registry);
    }

    function test_setNovaAppRegistry_onlyOwner() public {
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setNovaAppRegistry(stranger);
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setNovaAppRegistry(stranger);
    }

    // ------------------------------------------------------------------ master secret pin

    function test_setMasterSecretHash_setsOverwritesAndEmits() public {
        bytes32 h1 = keccak256("secret one");
        bytes32 h2 = keccak256("secret two");
        vm.expectEmit(address(kms));
        emit KMSRegistry.MasterSecretHashSet(h1);
        kms.setMasterSecretHash(h1);
        assertEq(kms.masterSecretHash(), h1);

        vm.expectEmit(address(kms));
        emit KMSRegistry.MasterSecretHashSet(h2);
        kms.setMasterSecretHash(h2);
        assertEq(kms.masterSecretHash(), h2);
    }

    function test_setMasterSecretHash_rejectsZero() public {
        kms.setMasterSecretHash(keccak256("pin"));
        vm.expectRevert(KMSRegistry.ZeroHash.selector);
        kms.setMasterSecretHash(bytes32(0));
        assertEq(kms.masterSecretHash(), keccak256("pin"));
    }

    function test_setMasterSecretHash_onlyOwner() public {
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setMasterSecretHash(keccak256("pin"));
        assertEq(kms.masterSecretHash(), bytes32(0));
    }

    function test_resetMasterSecretHash_clearsAndEmits() public {
        kms.setMasterSecretHash(keccak256("pin"));
        vm.expectEmit(address(kms));
        emit KMSRegistry.MasterSecretHashReset();
        kms.resetMasterSecretHash();
        assertEq(kms.masterSecretHash(), bytes32(0));

        // resetting an unset pin is allowed and still reported
        vm.expectEmit(address(kms));
        emit KMSRegistry.MasterSecretHashReset();
        kms.resetMasterSecretHash();
    }

    function test_resetMasterSecretHash_onlyOwner() public {
        kms.setMasterSecretHash(keccak256("pin"));
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.resetMasterSecretHash();
        assertEq(kms.masterSecretHash(), keccak256("pin"));
    }

    // ------------------------------------------------------------------ addOperator

    function test_addOperator_addsAndEmits() public {
        vm.expectEmit(address(kms));
        emit KMSRegistry.OperatorAdded(op1, KMS_APP, 3, 9);
        vm.prank(registry);
        kms.addOperator(op1, KMS_APP, 3, 9);

        assertTrue(kms.isOperator(op1));
        assertFalse(kms.isOperator(op2));
        assertEq(kms.operatorCount(), 1);
        assertEq(kms.operatorAt(0), op1);
        address[] memory expected = new address[](1);
        expected[0] = op1;
        assertEq(kms.getOperators(), expected);
    }

    function test_addOperator_isIdempotent() public {
        _add(op1);
        recordLogs();
        vm.prank(registry);
        kms.addOperator(op1, KMS_APP, 2, 5); // other version/instance ids: still a no-op
        assertNoLogs();
        assertEq(kms.operatorCount(), 1);
        assertEq(kms.getOperators().length, 1);
    }

    function test_addOperator_onlyRegistry() public {
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.addOperator(op1, KMS_APP, 1, 1);
        // the owner is not the registry either
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.addOperator(op1, KMS_APP, 1, 1);
        assertFalse(kms.isOperator(op1));
    }

    function test_addOperator_wrongApp() public {
        vm.prank(registry);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.WrongApp.selector, KMS_APP + 1, KMS_APP));
        kms.addOperator(op1, KMS_APP + 1, 1, 1);
        vm.prank(registry);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.WrongApp.selector, 0, KMS_APP));
        kms.addOperator(op1, 0, 1, 1);
        assertEq(kms.operatorCount(), 0);
    }

    function test_addOperator_beforeKmsAppIdSet() public {
        KMSRegistry fresh = new KMSRegistry(registry);
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.KmsAppIdNotSet.selector);
        fresh.addOperator(op1, 1, 1, 1);
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.KmsAppIdNotSet.selector);
        fresh.addOperator(op1, 0, 1, 1);
    }

    function test_addOperator_rejectsZeroWallet() public {
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.ZeroAddress.selector);
        kms.addOperator(address(0), KMS_APP, 1, 1);
        assertEq(kms.operatorCount(), 0);
    }

    // ------------------------------------------------------------------ removeOperator

    function test_removeOperator_removesAndEmits() public {
        _add(op1);
        vm.expectEmit(address(kms));
        emit KMSRegistry.OperatorRemoved(op1, KMS_APP, 4, 11);
        vm.prank(registry);
        kms.removeOperator(op1, KMS_APP, 4, 11);
        assertFalse(kms.isOperator(op1));
        assertEq(kms.operatorCount(), 0);
        assertEq(kms.getOperators().length, 0);
    }

    function test_removeOperator_missingIsNoop() public {
        _add(op1);
        recordLogs();
        _remove(op2);
        assertNoLogs();
        assertEq(kms.operatorCount(), 1);
        assertTrue(kms.isOperator(op1));

        _remove(op1);
        recordLogs();
        _remove(op1); // twice
        assertNoLogs();
        assertEq(kms.operatorCount(), 0);
    }

    function test_removeOperator_swapAndPop() public {
        _add(op1);
        _add(op2);
        _add(op3);
        _remove(op1); // first: the last one moves into its slot
        assertEq(kms.operatorAt(0), op3);
        assertEq(kms.operatorAt(1), op2);
        assertEq(kms.operatorCount(), 2);

        _remove(op2); // last: plain pop
        assertEq(kms.operatorCount(), 1);
        assertEq(kms.operatorAt(0), op3);

        _add(op1); // re-adding after removal works
        assertEq(kms.operatorAt(1), op1);
        _remove(op3);
        assertEq(kms.operatorAt(0), op1);
        assertTrue(kms.isOperator(op1));
        assertFalse(kms.isOperator(op3));
    }

    function test_removeOperator_onlyRegistry() public {
        _add(op1);
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.removeOperator(op1, KMS_APP, 1, 1);
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.removeOperator(op1, KMS_APP, 1, 1);
        assertTrue(kms.isOperator(op1));
    }

    function test_removeOperator_wrongApp() public {
        _add(op1);
        vm.prank(registry);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.WrongApp.selector, 99, KMS_APP));
        kms.removeOperator(op1, 99, 1, 1);
        assertTrue(kms.isOperator(op1));
    }

    function test_removeOperator_beforeKmsAppIdSet() public {
        KMSRegistry fresh = new KMSRegistry(registry);
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.KmsAppIdNotSet.selector);
        fresh.removeOperator(op1, 1, 1, 1);
    }

    // ------------------------------------------------------------------ views

    function test_operatorAt_outOfRange() public {
        vm.expectRevert(KMSRegistry.IndexOutOfRange.selector);
        kms.operatorAt(0);
        _add(op1);
        assertEq(kms.operatorAt(0), op1);
        vm.expectRevert(KMSRegistry.IndexOutOfRange.selector);
        kms.operatorAt(1);
        vm.expectRevert(KMSRegistry.IndexOutOfRange.selector);
        kms.operatorAt(type(uint256).max);
    }

    function test_views_afterSeveralChanges() public {
        _add(op1);
        _add(op2);
        _add(op3);
        address[] memory expected = new address[](3);
        expected[0] = op1;
        expected[1] = op2;
        expected[2] = op3;
        assertEq(kms.getOperators(), expected);
        for (uint256 i = 0; i < 3; i++) {
            assertEq(kms.operatorAt(i), expected[i]);
            assertTrue(kms.isOperator(expected[i]));
        }
        assertFalse(kms.isOperator(stranger));
        assertFalse(kms.isOperator(address(0)));
    }

    // ------------------------------------------------------------------ guardians

    address internal constant G1 = address(0x6001);
    address internal constant G2 = address(0x6002);
    address internal constant G3 = address(0x6003);
    bytes32 internal constant K1 = keccak256("hpke key 1");
    bytes32 internal constant K2 = keccak256("hpke key 2");
    bytes32 internal constant K3 = keccak256("hpke key 3");

    function _addrs(address a, address b, address c) internal pure returns (address[] memory out) {
        out = new address[](3);
        (out[0], out[1], out[2]) = (a, b, c);
    }

    function _keys(bytes32 a, bytes32 b, bytes32 c) internal pure returns (bytes32[] memory out) {
        out = new bytes32[](3);
        (out[0], out[1], out[2]) = (a, b, c);
    }

    /// `n` distinct non-zero wallets and keys, derived from `seed`.
    function _guardianSet(uint256 n, uint256 seed)
        internal
        pure
        returns (address[] memory wallets, bytes32[] memory keys)
    {
        wallets = new address[](n);
        keys = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            wallets[i] = address(uint160(0x7000 + seed * 100 + i));
            keys[i] = keccak256(abi.encode("key", seed, i));
        }
    }

    function _assertGuardians(address[] memory wallets, bytes32[] memory keys, uint8 threshold, uint256 version)
        internal
        view
    {
        (address[] memory w, bytes32[] memory k, uint8 t, uint256 v) = kms.guardians();
        assertEq(w, wallets, "guardians: wallets");
        assertEq(k.length, keys.length, "guardians: encKeys length");
        for (uint256 i = 0; i < keys.length; i++) {
            assertEq(k[i], keys[i], "guardians: encKey");
        }
        assertEq(uint256(t), uint256(threshold), "guardians: threshold");
        assertEq(v, version, "guardians: version");
        assertEq(kms.guardianSetVersion(), version, "guardianSetVersion");
        for (uint256 i = 0; i < wallets.length; i++) {
            assertTrue(kms.isGuardian(wallets[i]), "member is not isGuardian");
        }
    }

    function _assertNoGuardians(uint256 version) internal view {
        _assertGuardians(new address[](0), new bytes32[](0), 0, version);
        assertFalse(kms.isGuardian(G1));
        assertFalse(kms.isGuardian(G2));
        assertFalse(kms.isGuardian(G3));
        assertFalse(kms.isGuardian(address(0)));
    }

    function test_guardians_emptyOnDeploy() public {
        assertEq(kms.MAX_GUARDIANS(), 16);
        _assertNoGuardians(0);
        KMSRegistry fresh = new KMSRegistry(registry);
        (address[] memory w, bytes32[] memory k, uint8 t, uint256 v) = fresh.guardians();
        assertEq(w.length + k.length + t + v, 0);
        // version 0 marks nobody, not even the zero address (whose mapping slot is also 0)
        assertFalse(fresh.isGuardian(address(0)));
    }

    function test_setGuardians_storesEmitsAndBumpsVersion() public {
        address[] memory wallets = _addrs(G1, G2, G3);
        bytes32[] memory keys = _keys(K1, K2, K3);
        vm.expectEmit(address(kms));
        emit KMSRegistry.GuardiansSet(1, wallets, keys, 2);
        kms.setGuardians(wallets, keys, 2);
        _assertGuardians(wallets, keys, 2, 1);
        assertFalse(kms.isGuardian(stranger));
        assertFalse(kms.isGuardian(address(0)));
        // the guardian set is apart from the operators and the pin
        assertEq(kms.operatorCount(), 0);
        assertFalse(kms.isOperator(G1));
        assertEq(kms.masterSecretHash(), bytes32(0));
    }

    function test_setGuardians_thresholdBounds() public {
        address[] memory wallets = _addrs(G1, G2, G3);
        bytes32[] memory keys = _keys(K1, K2, K3);
        kms.setGuardians(wallets, keys, 1);
        _assertGuardians(wallets, keys, 1, 1);
        kms.setGuardians(wallets, keys, 3); // threshold == n
        _assertGuardians(wallets, keys, 3, 2);
    }

    function test_setGuardians_sizeBounds() public {
        (address[] memory one, bytes32[] memory oneKey) = _guardianSet(1, 1);
        kms.setGuardians(one, oneKey, 1);
        _assertGuardians(one, oneKey, 1, 1);
        (address[] memory most, bytes32[] memory mostKeys) = _guardianSet(16, 2);
        kms.setGuardians(most, mostKeys, 16);
        _assertGuardians(most, mostKeys, 16, 2);

        (address[] memory tooMany, bytes32[] memory tooManyKeys) = _guardianSet(17, 3);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.GuardianCountOutOfRange.selector, 17, 16));
        kms.setGuardians(tooMany, tooManyKeys, 1);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.GuardianCountOutOfRange.selector, 0, 16));
        kms.setGuardians(new address[](0), new bytes32[](0), 0);
        _assertGuardians(most, mostKeys, 16, 2);
    }

    function test_setGuardians_replacesTheWholeSet() public {
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        address[] memory next = new address[](2);
        (next[0], next[1]) = (G3, stranger);
        bytes32[] memory nextKeys = new bytes32[](2);
        (nextKeys[0], nextKeys[1]) = (K1, keccak256("stranger's key"));
        vm.expectEmit(address(kms));
        emit KMSRegistry.GuardiansSet(2, next, nextKeys, 2);
        kms.setGuardians(next, nextKeys, 2);
        _assertGuardians(next, nextKeys, 2, 2); // shorter arrays: nothing left over
        assertFalse(kms.isGuardian(G1));
        assertFalse(kms.isGuardian(G2));
        assertTrue(kms.isGuardian(G3));
        assertTrue(kms.isGuardian(stranger));

        // the same set again is a new version too
        kms.setGuardians(next, nextKeys, 1);
        _assertGuardians(next, nextKeys, 1, 3);
    }

    function test_clearGuardians_emptiesEmitsAndBumpsVersion() public {
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        vm.expectEmit(address(kms));
        emit KMSRegistry.GuardiansCleared(2);
        kms.clearGuardians();
        _assertNoGuardians(2);

        // clearing an empty set still counts and is reported
        vm.expectEmit(address(kms));
        emit KMSRegistry.GuardiansCleared(3);
        kms.clearGuardians();
        _assertNoGuardians(3);

        // a set after a clear: earlier members come back only if listed again
        address[] memory again = new address[](1);
        again[0] = G2;
        bytes32[] memory againKeys = new bytes32[](1);
        againKeys[0] = K2;
        kms.setGuardians(again, againKeys, 1);
        _assertGuardians(again, againKeys, 1, 4);
        assertFalse(kms.isGuardian(G1));
        assertFalse(kms.isGuardian(G3));
    }

    function test_clearGuardians_beforeAnySet() public {
        vm.expectEmit(address(kms));
        emit KMSRegistry.GuardiansCleared(1);
        kms.clearGuardians();
        _assertNoGuardians(1);
    }

    function test_setGuardians_lengthMismatch() public {
        bytes32[] memory two = new bytes32[](2);
        (two[0], two[1]) = (K1, K2);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.GuardianLengthMismatch.selector, 3, 2));
        kms.setGuardians(_addrs(G1, G2, G3), two, 1);
        address[] memory twoWallets = new address[](2);
        (twoWallets[0], twoWallets[1]) = (G1, G2);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.GuardianLengthMismatch.selector, 2, 3));
        kms.setGuardians(twoWallets, _keys(K1, K2, K3), 1);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.GuardianLengthMismatch.selector, 0, 3));
        kms.setGuardians(new address[](0), _keys(K1, K2, K3), 1);
        _assertNoGuardians(0);
    }

    function test_setGuardians_thresholdOutOfRange() public {
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ThresholdOutOfRange.selector, 0, 3));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 0);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ThresholdOutOfRange.selector, 4, 3));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 4);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ThresholdOutOfRange.selector, 255, 3));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 255);
        _assertNoGuardians(0);
    }

    function test_setGuardians_rejectsZeroWallet() public {
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ZeroGuardianWallet.selector, 0));
        kms.setGuardians(_addrs(address(0), G2, G3), _keys(K1, K2, K3), 1);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ZeroGuardianWallet.selector, 2));
        kms.setGuardians(_addrs(G1, G2, address(0)), _keys(K1, K2, K3), 1);
        _assertNoGuardians(0);
    }

    function test_setGuardians_rejectsZeroEncKey() public {
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ZeroGuardianEncKey.selector, 1));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, bytes32(0), K3), 1);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.ZeroGuardianEncKey.selector, 2));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, bytes32(0)), 1);
        _assertNoGuardians(0);
    }

    function test_setGuardians_rejectsDuplicateWallet() public {
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.DuplicateGuardian.selector, G1));
        kms.setGuardians(_addrs(G1, G1, G3), _keys(K1, K2, K3), 1);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.DuplicateGuardian.selector, G1));
        kms.setGuardians(_addrs(G1, G2, G1), _keys(K1, K2, K3), 1);
        _assertNoGuardians(0);
    }

    function test_setGuardians_rejectsDuplicateEncKey() public {
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.DuplicateGuardianEncKey.selector, 1));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K1, K3), 2);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.DuplicateGuardianEncKey.selector, 2));
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K1), 2);
        _assertNoGuardians(0);
    }

    function test_setGuardians_failedCallChangesNothing() public {
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        recordLogs();
        // G2 is marked with the would-be version before the duplicate G3 reverts: all undone
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.DuplicateGuardian.selector, G3));
        kms.setGuardians(_addrs(G2, G3, G3), _keys(K1, K2, K3), 1);
        assertNoLogs();
        _assertGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2, 1);
        // and the next successful call uses the version the failed one would have taken
        kms.setGuardians(_addrs(G3, G2, G1), _keys(K3, K2, K1), 3);
        _assertGuardians(_addrs(G3, G2, G1), _keys(K3, K2, K1), 3, 2);
    }

    function test_setGuardians_onlyOwner() public {
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        vm.prank(registry);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        // not even a guardian of the current set
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        vm.prank(G1);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 1);
        _assertGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2, 1);
    }

    function test_clearGuardians_onlyOwner() public {
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        vm.prank(stranger);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.clearGuardians();
        vm.prank(G2);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.clearGuardians();
        _assertGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2, 1);
    }

    function test_guardians_untouchedByOperatorsAndPin() public {
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        _add(G1);
        kms.setMasterSecretHash(keccak256("pin"));
        _remove(G1);
        kms.resetMasterSecretHash();
        _assertGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2, 1);
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_callbacksRejectOtherApps(uint256 appId, address caller) public {
        vm.assume(appId != KMS_APP);
        vm.prank(registry);
        vm.expectRevert(abi.encodeWithSelector(KMSRegistry.WrongApp.selector, appId, KMS_APP));
        kms.addOperator(op1, appId, 1, 1);

        vm.assume(caller != registry && caller != address(vm));
        vm.prank(caller);
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.addOperator(op1, KMS_APP, 1, 1);
        vm.prank(caller);
        vm.expectRevert(KMSRegistry.NotNovaAppRegistry.selector);
        kms.removeOperator(op1, KMS_APP, 1, 1);
    }

    function testFuzz_onlyOwnerConfigures(address caller) public {
        vm.assume(caller != address(this) && caller != address(vm));
        vm.startPrank(caller);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setNovaAppRegistry(caller);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setMasterSecretHash(keccak256("x"));
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.resetMasterSecretHash();
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setKmsAppId(1);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        vm.expectRevert(KMSRegistry.NotOwner.selector);
        kms.clearGuardians();
        vm.stopPrank();
    }

    /// Random candidate sets (sizes 0..18; wallets mostly distinct, sometimes from a pool of 3
    /// (duplicates) or zero; keys sometimes zero; thresholds mostly in 0..n+1) replacing a valid
    /// set, against the rules: accepted exactly when valid, then stored as given with the next
    /// version; a rejected call changes nothing.
    function testFuzz_setGuardiansMatchesRules(uint8 size, uint8 rawThreshold, uint256 seed) public {
        kms.setGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2);
        uint256 n = uint256(size) % 19;
        uint8 threshold = rawThreshold < 200 ? uint8(uint256(rawThreshold) % (n + 2)) : rawThreshold;
        address[] memory wallets = new address[](n);
        bytes32[] memory keys = new bytes32[](n);
        bool valid = n >= 1 && n <= 16 && threshold >= 1 && threshold <= n;
        for (uint256 i = 0; i < n; i++) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint256 pick = r % 64;
            wallets[i] =
                pick == 0 ? address(0) : pick < 4 ? address(uint160(0x9000 + pick)) : address(uint160(0xa000 + i));
            keys[i] = (r >> 8) % 64 == 0 ? bytes32(0) : bytes32(r);
            if (wallets[i] == address(0) || keys[i] == bytes32(0)) valid = false;
            for (uint256 j = 0; j < i; j++) {
                if (wallets[j] == wallets[i]) valid = false;
            }
        }
        recordLogs();
        (bool ok,) = address(kms).call(abi.encodeCall(KMSRegistry.setGuardians, (wallets, keys, threshold)));
        assertEq(ok, valid, "accepted exactly when valid");
        if (ok) {
            assertEq(vm.getRecordedLogs().length, 1, "one GuardiansSet event");
            _assertGuardians(wallets, keys, threshold, 2);
            assertFalse(kms.isGuardian(G1), "a replaced guardian");
        } else {
            assertNoLogs();
            _assertGuardians(_addrs(G1, G2, G3), _keys(K1, K2, K3), 2, 1);
        }
    }

    /// Random add/remove sequences over 6 wallets against a reference set: same members, the
    /// count matches, no duplicates, every index maps back to a member; events only on change.
    function testFuzz_operatorSetMatchesReference(uint8[] calldata ops) public {
        uint256 n = 6;
        address[] memory pool = new address[](n);
        for (uint256 i = 0; i < n; i++) {
            pool[i] = address(uint160(0x1000 + i));
        }
        bool[] memory member = new bool[](n);
        uint256 count;

        uint256 steps = ops.length < 64 ? ops.length : 64;
        for (uint256 s = 0; s < steps; s++) {
            address wallet = pool[ops[s] % n];
            bool add = ops[s] & 0x80 == 0;
            bool was = member[ops[s] % n];
            recordLogs();
            vm.prank(registry);
            if (add) {
                kms.addOperator(wallet, KMS_APP, 1, s);
                if (!was) count++;
                member[ops[s] % n] = true;
            } else {
                kms.removeOperator(wallet, KMS_APP, 1, s);
                if (was) count--;
                member[ops[s] % n] = false;
            }
            assertEq(vm.getRecordedLogs().length, was == add ? 0 : 1, "event only on change");
            _checkAgainstReference(pool, member, count);
        }
    }

    function _checkAgainstReference(address[] memory pool, bool[] memory member, uint256 count) internal view {
        address[] memory ops = kms.getOperators();
        assertEq(ops.length, count, "getOperators length");
        assertEq(kms.operatorCount(), count, "operatorCount");
        for (uint256 i = 0; i < ops.length; i++) {
            assertEq(kms.operatorAt(i), ops[i], "operatorAt");
            assertTrue(kms.isOperator(ops[i]), "listed but not isOperator");
            for (uint256 j = i + 1; j < ops.length; j++) {
                assertTrue(ops[i] != ops[j], "duplicate operator");
            }
        }
        uint256 members;
        for (uint256 k = 0; k < pool.length; k++) {
            assertEq(kms.isOperator(pool[k]), member[k], "isOperator vs reference");
            if (member[k]) {
                members++;
                bool found;
                for (uint256 i = 0; i < ops.length; i++) {
                    if (ops[i] == pool[k]) found = true;
                }
                assertTrue(found, "member missing from getOperators");
            }
        }
        assertEq(members, count, "reference count");
    }
}

/// A dappContract whose callbacks burn all their gas.
contract GasBurner is INovaAppInterface {
    function addOperator(address, uint256, uint256, uint256) external pure {
        while (true) {}
    }

    function removeOperator(address, uint256, uint256, uint256) external pure {
        while (true) {}
    }
}

/// A dappContract whose callbacks revert with a reason string.
contract StringReverter is INovaAppInterface {
    function addOperator(address, uint256, uint256, uint256) external pure {
        revert("no thanks");
    }

    function removeOperator(address, uint256, uint256, uint256) external pure {
        revert("still no");
    }
}

/// End to end: DevNovaAppRegistry's callbacks drive KMSRegistry's operator set.
contract KMSRegistryWiringTest is TestBase {
    bytes32 internal constant NITRO = keccak256("aws-nitro");

    DevNovaAppRegistry internal nova;
    KMSRegistry internal kms;
    address internal kmsOwner;
    address internal appOwner;
    address internal stranger;
    uint256 internal kmsApp;
    uint256 internal kmsVersion;

    function setUp() public {
        kmsOwner = makeAddr("kms owner");
        appOwner = makeAddr("kms app owner");
        stranger = makeAddr("stranger");
        nova = new DevNovaAppRegistry(); // this test contract is the registry owner
        vm.prank(kmsOwner);
        kms = new KMSRegistry(address(nova));

        vm.startPrank(appOwner);
        kmsApp = nova.createApp(NITRO, address(kms), "ipfs://kms");
        kmsVersion = nova.enrollVersion(
            kmsApp, "v1", bytesOf(1, 48), bytesOf(2, 48), bytesOf(3, 48), "img", "audit", "hash", "run"
        );
        vm.stopPrank();
        vm.prank(kmsOwner);
        kms.setKmsAppId(kmsApp);
    }

    function _register(address wallet) internal returns (uint256) {
        vm.prank(appOwner);
        return nova.registerInstanceDev(kmsApp, kmsVersion, "https://kms.example", hex"04aa", wallet);
    }

    function test_registerThenStop_updatesOperators() public {
        address wallet = makeAddr("node 1");
        vm.expectEmit(address(kms));
        emit KMSRegistry.OperatorAdded(wallet, kmsApp, kmsVersion, 1);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackSuccess(kmsApp, address(kms), wallet);
        uint256 id = _register(wallet);
        assertEq(id, 1);
        assertTrue(kms.isOperator(wallet));
        assertEq(kms.operatorCount(), 1);

        vm.expectEmit(address(kms));
        emit KMSRegistry.OperatorRemoved(wallet, kmsApp, kmsVersion, id);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackSuccess(kmsApp, address(kms), wallet);
        vm.prank(appOwner);
        nova.updateInstanceStatus(id, INovaAppRegistryView.InstanceStatus.STOPPED);
        assertFalse(kms.isOperator(wallet));
        assertEq(kms.operatorCount(), 0);
    }

    function test_failedInstance_isRemovedToo() public {
        address a = makeAddr("node a");
        address b = makeAddr("node b");
        uint256 ia = _register(a);
        _register(b);
        nova.updateInstanceStatus(ia, INovaAppRegistryView.InstanceStatus.FAILED); // registry owner
        assertFalse(kms.isOperator(a));
        assertTrue(kms.isOperator(b));
        assertEq(kms.getOperators().length, 1);
    }

    function test_otherAppsInstance_callbackFailsButRegistrationSucceeds() public {
        // another app pointing its dappContract at the KMSRegistry: WrongApp inside the callback
        vm.startPrank(stranger);
        uint256 other = nova.createApp(NITRO, address(kms), "ipfs://other");
        uint256 v = nova.enrollVersion(other, "v1", bytesOf(4, 48), bytesOf(5, 48), bytesOf(6, 48), "img", "", "", "");
        address wallet = makeAddr("intruder");
        bytes memory revertData = abi.encodeWithSelector(KMSRegistry.WrongApp.selector, other, kmsApp);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(other, address(kms), _hex(revertData));
        uint256 id = nova.registerInstanceDev(other, v, "http://x", hex"01", wallet);
        vm.stopPrank();

        assertEq(id, 1);
        assertFalse(kms.isOperator(wallet));
        INovaAppRegistryView.RuntimeInstance memory inst = nova.getInstanceByWallet(wallet);
        assertEq(inst.instanceId, id);
        assertTrue(inst.zkVerified);
        assertEq(uint8(inst.status), uint8(INovaAppRegistryView.InstanceStatus.ACTIVE));
    }

    function test_kmsAppIdUnset_callbackFails() public {
        vm.prank(kmsOwner);
        KMSRegistry unset = new KMSRegistry(address(nova));
        vm.startPrank(appOwner);
        uint256 app = nova.createApp(NITRO, address(unset), "");
        uint256 v = nova.enrollVersion(app, "v1", bytesOf(1, 48), bytesOf(1, 48), bytesOf(1, 48), "", "", "", "");
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(
            app, address(unset), _hex(abi.encodeWithSelector(KMSRegistry.KmsAppIdNotSet.selector))
        );
        nova.registerInstanceDev(app, v, "https://n", hex"01", makeAddr("w"));
        vm.stopPrank();
        assertEq(unset.operatorCount(), 0);
    }

    function test_withoutProof_stillCallsBack_butNotZkVerified() public {
        // The platform calls addOperator for unattested instances too: the KMS must check
        // zkVerified on the instance, membership alone is not enough.
        address wallet = makeAddr("unattested");
        bytes32 cm = nova.getVersion(kmsApp, kmsVersion).codeMeasurement;
        vm.prank(appOwner);
        nova.registerInstanceWithoutProof(kmsApp, kmsVersion, "https://u", hex"02", wallet, cm);
        assertTrue(kms.isOperator(wallet));
        assertFalse(nova.getInstanceByWallet(wallet).zkVerified);
    }

    function test_gasBurningDapp_callbackFailsWithinLimit() public {
        GasBurner burner = new GasBurner();
        vm.startPrank(appOwner);
        uint256 app = nova.createApp(NITRO, address(burner), "");
        uint256 v = nova.enrollVersion(app, "v1", bytesOf(1, 48), bytesOf(1, 48), bytesOf(1, 48), "", "", "", "");
        address wallet = makeAddr("w");
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(app, address(burner), "empty revert data");
        uint256 id = nova.registerInstanceDev{gas: 2_000_000}(app, v, "https://n", hex"01", wallet);
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(app, address(burner), "empty revert data");
        nova.updateInstanceStatus{gas: 2_000_000}(id, INovaAppRegistryView.InstanceStatus.STOPPED);
        vm.stopPrank();
        assertEq(uint8(nova.getInstance(id).status), uint8(INovaAppRegistryView.InstanceStatus.STOPPED));
    }

    function test_revertReasonString_isReported() public {
        StringReverter reverter = new StringReverter();
        vm.startPrank(appOwner);
        uint256 app = nova.createApp(NITRO, address(reverter), "");
        uint256 v = nova.enrollVersion(app, "v1", bytesOf(1, 48), bytesOf(1, 48), bytesOf(1, 48), "", "", "", "");
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(app, address(reverter), "no thanks");
        uint256 id = nova.registerInstanceDev(app, v, "https://n", hex"01", makeAddr("w"));
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(app, address(reverter), "still no");
        nova.updateInstanceStatus(id, INovaAppRegistryView.InstanceStatus.FAILED);
        vm.stopPrank();
    }

    function test_dappWithoutCode_callbackFails() public {
        address eoa = makeAddr("not a contract");
        vm.startPrank(appOwner);
        uint256 app = nova.createApp(NITRO, eoa, "");
        uint256 v = nova.enrollVersion(app, "v1", bytesOf(1, 48), bytesOf(1, 48), bytesOf(1, 48), "", "", "", "");
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(app, eoa, "dappContract has no code");
        nova.registerInstanceDev(app, v, "https://n", hex"01", makeAddr("w"));
        vm.stopPrank();
    }

    function test_tooLittleGasForCallback_revertsWholeRegistration() public {
        address wallet = makeAddr("starved");
        vm.prank(appOwner);
        vm.expectRevert(DevNovaAppRegistry.InsufficientGasForCallback.selector);
        nova.registerInstanceDev{gas: 400_000}(kmsApp, kmsVersion, "https://n", hex"01", wallet);
        assertEq(nova.getInstanceByWallet(wallet).instanceId, 0);
        assertFalse(kms.isOperator(wallet));
    }

    function test_registryMoved_oldRegistryCallbacksFail() public {
        vm.prank(kmsOwner);
        kms.setNovaAppRegistry(makeAddr("new proxy"));
        address wallet = makeAddr("late");
        vm.expectEmit(address(nova));
        emit INovaAppRegistryView.OperatorCallbackFailed(
            kmsApp, address(kms), _hex(abi.encodeWithSelector(KMSRegistry.NotNovaAppRegistry.selector))
        );
        _register(wallet);
        assertFalse(kms.isOperator(wallet));
    }

    function _hex(bytes memory data) internal pure returns (string memory) {
        bytes16 digits = "0123456789abcdef";
        bytes memory out = new bytes(2 + 2 * data.length);
        out[0] = "0";
        out[1] = "x";
        for (uint256 i = 0; i < data.length; i++) {
            out[2 + 2 * i] = digits[uint8(data[i]) >> 4];
            out[3 + 2 * i] = digits[uint8(data[i]) & 0x0f];
        }
        return string(out);
    }
}
