// model.json + binary weight shards in a directory, the layout tf.loadLayersModel
// reads over HTTP. Without tfjs-node there is no file:// handler, so these are
// small IOHandlers of our own: save writes atomically, load reads it back.
import fs from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { writeFileAtomic } from '../../fs/atomic-file.js';

export const MODEL_JSON = 'model.json';
/** tfjs-converter's default shard size: small enough for browser caches and CDNs. */
export const SHARD_BYTES = 4 * 1024 * 1024;

/** A save handler that writes `dir/model.json` and its shards; `written` collects the file names. */
export function directorySaveHandler(dir: string, written: string[] = []): tf.io.IOHandler {
  return tf.io.withSaveHandler(async (artifacts) => {
    if (!artifacts.weightSpecs || artifacts.weightData === undefined) throw new Error('the model has no weights to save');
    const data = new Uint8Array(tf.io.concatenateArrayBuffers(artifacts.weightData));
    const count = Math.max(1, Math.ceil(data.byteLength / SHARD_BYTES));
    const paths = Array.from({ length: count }, (_, i) => `group1-shard${i + 1}of${count}.bin`);
    // Shards first: model.json is what a reader opens, so it must not appear before its shards.
    for (const [i, name] of paths.entries()) {
      await writeFileAtomic(dir, name, [data.subarray(i * SHARD_BYTES, (i + 1) * SHARD_BYTES)]);
      written.push(name);
    }
    const json: tf.io.ModelJSON = {
      modelTopology: artifacts.modelTopology as {},
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy,
      weightsManifest: [{ paths, weights: artifacts.weightSpecs }],
    };
    await writeFileAtomic(dir, MODEL_JSON, [new TextEncoder().encode(JSON.stringify(json))]);
    written.push(MODEL_JSON);
    return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
  });
}

/** A load handler for what directorySaveHandler wrote (`tf.loadLayersModel(directoryLoadHandler(dir))`). */
export function directoryLoadHandler(dir: string): tf.io.IOHandler {
  return {
    load: async () => {
      const jsonFile = path.join(dir, MODEL_JSON);
      let modelJson: tf.io.ModelJSON;
      try {
        modelJson = JSON.parse(await fs.readFile(jsonFile, 'utf8')) as tf.io.ModelJSON;
      } catch (err) {
        throw new Error(`cannot read ${jsonFile}: ${(err as Error).message}`);
      }
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const buffers: ArrayBuffer[] = [];
        for (const group of manifest) {
          for (const p of group.paths) {
            const bytes = await fs.readFile(path.join(dir, p));
            buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
          }
        }
        return [tf.io.getWeightSpecs(manifest), tf.io.concatenateArrayBuffers(buffers)];
      });
    },
  };
}
