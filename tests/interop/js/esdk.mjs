// The AWS Encryption SDK for JavaScript (@aws-crypto/client-node) against keyhold, and its
// messages against `keyhold encrypt`/`decrypt`. Usage:
//   node esdk.mjs encrypt KEY_ARN IN OUT      (context repo=r-js)
//   node esdk.mjs decrypt KEY_ARN IN OUT      (checks context repo=r-js)
// KMS_ENDPOINT names keyhold; prints "ok".
import { readFileSync, writeFileSync } from "node:fs";
import {
  buildClient, CommitmentPolicy, KmsKeyringNode, getClient, AlgorithmSuiteIdentifier,
} from "@aws-crypto/client-node";
import { KMS } from "@aws-sdk/client-kms";

const [op, arn, input, output] = process.argv.slice(2);
const clientProvider = getClient(KMS, {
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  endpoint: process.env.KMS_ENDPOINT,
});
const keyring = new KmsKeyringNode({ generatorKeyId: arn, clientProvider });
const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);
const data = readFileSync(input);
if (op === "encrypt") {
  const { result } = await encrypt(keyring, data, {
    encryptionContext: { repo: "r-js" },
    suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
  });
  writeFileSync(output, result);
} else {
  const { plaintext, messageHeader } = await decrypt(keyring, data);
  if (messageHeader.encryptionContext.repo !== "r-js") {
    throw new Error(`unexpected context ${JSON.stringify(messageHeader.encryptionContext)}`);
  }
  writeFileSync(output, plaintext);
}
console.log("ok");
