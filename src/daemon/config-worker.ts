/**
 * The config parser's thread (see loadConfigSource): reads and validates
 * the file named in workerData, posts the result, and ends. Everything the
 * parse allocated goes away with this thread's heap.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadConfigSourceHere, type ConfigWorkerAnswer, type ConfigWorkerRequest } from './config-source.js';
import { InputFileError } from '../policy/input-file.js';

const req = workerData as ConfigWorkerRequest;
let answer: ConfigWorkerAnswer;
try {
  answer = { kind: 'loaded', result: loadConfigSourceHere(req.path, { containersRequired: req.containersRequired, maxBytes: req.maxBytes }) };
} catch (err) {
  if (!(err instanceof InputFileError)) throw err;
  answer = { kind: 'unreadable', path: err.path, reason: err.reason, problem: err.problem };
}
parentPort!.postMessage(answer);
