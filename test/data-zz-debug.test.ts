import { it } from 'vitest';
import { generateSynthetic } from '../src/common/data/synthetic.js';
it('dbg', () => {
  for (const seed of [7, 8, 9]) {
  const { train } = generateSynthetic({ seed, trainCount: 1000, testCount: 10 });
  let ok = 0;
  for (let n = 0; n < train.count; n++) {
    let xx=0,yy=0,xy=0; const base=n*3072;
    for (let y=1;y<31;y++) for (let x=1;x<31;x++) for (let c=0;c<3;c++){
      const gx=train.images[base+(y*32+x+1)*3+c]-train.images[base+(y*32+x-1)*3+c]; const gy=train.images[base+((y+1)*32+x)*3+c]-train.images[base+((y-1)*32+x)*3+c];
      xx+=gx*gx; yy+=gy*gy; xy+=gx*gy; }
    const d=((0.5*Math.atan2(2*xy,xx-yy)*180/Math.PI)+180)%180;
    const want = (train.labels[n]>>1)*36; let g=Math.abs(d-want)%180; g=Math.min(g,180-g);
    if (g < 18) ok++;
  }
  console.log('ACC', seed, ok/1000);
  }
});
