/** Kubernetes NetworkPolicy front end: input objects, evaluator, matrix, explain, compiler. */
export * from './objects.js';
export * from './engine.js';
export * from './matrix.js';
export * from './explain.js';
export * from './compile.js';
export { ipInBlock, parseCidr, parseIp, formatCidr } from '../../net/ip.js';
